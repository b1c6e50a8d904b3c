"""Kubernetes manifests: base and overlays rendered, every resource valid against the Kubernetes JSON schemas
(kubernetes-validate ships them; strict mode rejects unknown fields), and the settings that keep calls alive
(drain grace, probes, WebSocket-friendly ingress, shared token secret, autoscaling on live calls) checked.

No kustomize binary is installable from the package registries, so ``render`` implements the subset of kustomize
these manifests use (resources, configMapGenerator, strategic-merge patches, images, labels) and refuses any other
field, including kustomize's rule that generator and patch files lie at or below their kustomization."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.cluster.node import advertised_address
from gateway.config import load_settings
from tests.unit.test_deploy_dashboard import scrape_names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
K8S_VERSION = "1.32.0"
TREES = {
    "base": K8S / "base",
    "cloud": K8S / "overlays/cloud",
    "local-agent": K8S / "overlays/local-agent",
    "scale-out": K8S / "overlays/scale-out",
}
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images", "labels"}
#: Strategic-merge keys of the lists these manifests patch (everything else is replaced, as in kustomize).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


# ---- a small kustomize -------------------------------------------------------------------------------------------
def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    assert path.is_relative_to(root.resolve()), f"{root}: {rel} is outside the kustomization (kustomize refuses it)"
    return path


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and key in _MERGE_KEYS:
            mk = _MERGE_KEYS[key]
            for item in value:
                match = next((c for c in current if c.get(mk) == item.get(mk)), None)
                if item.get("$patch") == "delete":
                    assert match is not None, f"$patch: delete of missing {key} {item.get(mk)}"
                    current.remove(match)
                elif match is not None:
                    _merge(match, item)
                else:
                    current.insert(0, copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def render(tree: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((tree / "kustomization.yaml").read_text())
    assert set(k) <= _KUSTOMIZATION_KEYS, (
        f"{tree}: kustomize fields the test renderer lacks: {set(k) - _KUSTOMIZATION_KEYS}"
    )
    out: list[dict[str, Any]] = []
    for rel in k.get("resources", []):
        path = (tree / rel).resolve()
        if path.is_dir():
            out += render(path)
        else:
            out += [d for d in yaml.safe_load_all(_inside(tree, rel).read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        assert set(gen) <= {"name", "files", "literals", "behavior"}, gen
        data: dict[str, str] = {}
        for spec in gen.get("files", []):
            key, _, rel = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
            data[key] = _inside(tree, rel).read_text()
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        existing = [r for r in out if r["kind"] == "ConfigMap" and r["metadata"]["name"] == gen["name"]]
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            assert not existing, f"ConfigMap {gen['name']} generated twice"
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
        else:
            assert existing, f"behavior {behavior} of a ConfigMap {gen['name']} the bases do not generate"
            existing[0]["data"] = {**existing[0]["data"], **data} if behavior == "merge" else data
    for patch_ref in k.get("patches", []):
        assert set(patch_ref) == {"path"}, patch_ref
        patch = yaml.safe_load(_inside(tree, patch_ref["path"]).read_text())
        targets = [r for r in out if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]]
        assert len(targets) == 1, f"patch {patch_ref['path']} matches {len(targets)} resources"
        _merge(targets[0], patch)
    for image in k.get("images", []):
        for r in out:
            for c in _containers(r):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for label in k.get("labels", []):
        assert not label.get("includeSelectors"), "selectors must stay stable across label changes"
        for r in out:
            r["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and "template" in r.get("spec", {}):
                r["spec"]["template"]["metadata"].setdefault("labels", {}).update(label["pairs"])
    return out


def _containers(r: dict[str, Any]) -> list[dict[str, Any]]:
    if r["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
        return r["spec"]["template"]["spec"]["containers"]
    return []


def _one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one resource of ``kind`` that belongs to the gateway itself (the scale-out overlay adds Redis's)."""
    found = [r for r in resources if r["kind"] == kind and not r["metadata"]["name"].endswith("-redis")]
    assert len(found) == 1, kind
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(params=sorted(TREES))
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(TREES[request.param])


# ---- schema validity -------------------------------------------------------------------------------------------------
def test_every_rendered_resource_is_valid_against_the_kubernetes_schemas(rendered):
    _, resources = rendered
    assert {r["kind"] for r in resources} >= {
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    }
    for r in resources:
        kubernetes_validate.validate(r, K8S_VERSION, strict=True)


def test_files_outside_the_kustomizations_are_valid_too():
    for path in (K8S / "prometheus-adapter-rules.yaml", K8S / "base/secret.example.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_misspelt_field():
    deployment = copy.deepcopy(_one(render(TREES["base"]), "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 75
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_renderer_refuses_files_outside_the_kustomization(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator:\n- name: x\n  files: [../../config/gateway.toml]\n"
    )
    with pytest.raises(AssertionError, match="outside the kustomization"):
        render(tmp_path)


# ---- what keeps calls alive ------------------------------------------------------------------------------------------
def test_grace_period_covers_prestop_the_drain_budget_and_the_goodbye(rendered):
    from gateway.app import create_app
    from gateway.drain import hangup_allowance_s

    _, resources = rendered
    drain_budget = tomllib.loads((ROOT / "config/gateway.toml").read_text())["server"]["drain_budget_s"]
    pod = _one(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == drain_budget + 15
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = load_settings(ROOT / "config/gateway.toml", env={"AGENT_URL": "ws://127.0.0.1:9/v1/ws"})
    allowance = hangup_allowance_s(create_app(settings))
    assert float(pre_stop[1]) + drain_budget + allowance <= pod["terminationGracePeriodSeconds"]


def test_probes_ports_and_scrape_annotations_point_at_the_gateway(rendered):
    _, resources = rendered
    deployment = _one(resources, "Deployment")
    template = deployment["spec"]["template"]
    c = template["spec"]["containers"][0]
    port = tomllib.loads((ROOT / "config/gateway.toml").read_text())["server"]["port"]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert _one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert _one(resources, "Service")["spec"]["selector"] == selector
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_ingress_keeps_media_websockets_open_and_exposes_only_the_carrier_routes(rendered):
    _, resources = rendered
    ingress = _one(resources, "Ingress")
    a = ingress["metadata"]["annotations"]
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(a["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert a["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/twilio"]  # /metrics, /readyz, /healthz stay inside the cluster
    service = _one(resources, "Service")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_secrets_and_config_are_wired_and_every_reference_resolves(rendered, tmp_path):
    name, resources = rendered
    pod = _one(resources, "Deployment")["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    refs = {k: e["valueFrom"]["secretKeyRef"] for k, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    # One Secret for every replica: any replica verifies any stream's call token.
    assert {r["name"] for r in refs.values()} == {"voice-gateway-secrets"}
    assert refs["GATEWAY_TOKEN_SECRET"].get("optional") is not True
    assert "TWILIO_AUTH_TOKEN" in refs
    if name == "local-agent":
        assert "ASSEMBLYAI_API_KEY" not in env  # never the cloud
    elif name in ("cloud", "scale-out"):
        assert refs["ASSEMBLYAI_API_KEY"]["optional"] is False
    else:
        assert refs["ASSEMBLYAI_API_KEY"]["optional"] is True
    configmaps = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["key"] in configmaps[ref["name"]], ref
    assert configmaps["voice-gateway-env"]["GATEWAY_PUBLIC_URL"].startswith("https://")
    # The mounted config directory, as the pod sees it, loads and finds the local agent's intents.
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    data = configmaps[volume["configMap"]["name"]]
    for item in volume["configMap"]["items"]:
        (tmp_path / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item["path"]).write_text(data[item["key"]])
    assert data["gateway.toml"] == (ROOT / "config/gateway.toml").read_text()  # generated from the committed file
    assert env["GATEWAY_CONFIG"]["value"] == mount["mountPath"] + "/gateway.toml"
    settings = load_settings(tmp_path / "gateway.toml", env={"AGENT_URL": "ws://127.0.0.1:9/v1/ws"})
    assert settings.local_agent_intents_path().is_file()


def test_overlays_choose_their_image(rendered):
    name, resources = rendered
    image = _one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    expected = {"base": ":0.1.0", "cloud": ":0.1.0-slim", "local-agent": ":0.1.0", "scale-out": ":0.1.0-slim"}
    assert image.endswith(expected[name])


# ---- scale-out (docs/how-to/operations/scale-out.md) -----------------------------------------------------------------
def _policy_allows(policy: dict[str, Any], labels: dict[str, str], port: int) -> bool:
    """Whether ``policy`` lets a pod with ``labels`` in on ``port`` (the rules these manifests use: podSelector by
    matchLabels, or no ``from`` at all, which is everyone)."""
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule.get("ports", [])]:
            continue
        sources = rule.get("from")
        if sources is None:
            return True
        if any(s["podSelector"]["matchLabels"].items() <= labels.items() for s in sources if "podSelector" in s):
            return True
    return False


def test_scale_out_shares_redis_with_the_gateway_pods_only_and_keeps_the_internal_port_inside():
    resources = render(TREES["scale-out"])
    gateway = _one(resources, "Deployment")
    redis = next(r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == "voice-gateway-redis")
    redis_svc = next(r for r in resources if r["kind"] == "Service" and r["metadata"]["name"] == "voice-gateway-redis")
    gw_labels = gateway["spec"]["template"]["metadata"]["labels"]
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    c = gateway["spec"]["template"]["spec"]["containers"][0]
    env = _env(c)
    # Every gateway pod points at the Redis Service, and tells the others where its internal listener is.
    host_port = env["REDIS_URL"]["value"].removeprefix("redis://").split("/")[0]
    assert host_port == f"{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}"
    internal_port = tomllib.loads((ROOT / "config/gateway.toml").read_text())["state"]["internal_port"]
    assert {"name": "internal", "containerPort": internal_port, "protocol": "TCP"} in c["ports"]
    assert env["GATEWAY_INTERNAL_URL"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # Neither the Service nor the Ingress carries the internal port.
    service = _one(resources, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    ingress = _one(resources, "Ingress")
    ports = {
        p["backend"]["service"]["port"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    }
    assert ports == {"http"}
    # NetworkPolicies: Redis and the internal port admit gateway pods only; the public port stays open.
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    redis_policy = next(p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items())
    gw_policy = next(p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= gw_labels.items())
    stranger = {"app": "something-else"}
    assert _policy_allows(redis_policy, gw_labels, 6379) and not _policy_allows(redis_policy, stranger, 6379)
    assert _policy_allows(gw_policy, gw_labels, internal_port)
    assert not _policy_allows(gw_policy, stranger, internal_port)
    assert _policy_allows(gw_policy, stranger, 8080)
    # Redis never evicts a live entry and persists nothing.
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    # The committed config, with the overlay's REDIS_URL, is a valid shared-state configuration.
    settings = load_settings(
        ROOT / "config/gateway.toml", env={"REDIS_URL": env["REDIS_URL"]["value"], "GATEWAY_INTERNAL_URL": "10.0.3.7"}
    )
    assert settings.state.shared and settings.state.internal_port == internal_port
    assert advertised_address(settings.state, internal_port) == f"http://10.0.3.7:{internal_port}"


async def test_hpa_scales_on_live_calls_through_the_adapter_rule_with_cpu_fallback(start_gateway, http):
    exported = await scrape_names(http, await start_gateway())
    adapter = yaml.safe_load(yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["data"]["config.yaml"])
    rule = adapter["rules"][0]
    series = rule["seriesQuery"].split("{")[0].strip("'\"")
    assert series in exported  # the adapter reads a series the gateway really exports
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    for tree in TREES.values():
        resources = render(tree)
        hpa = _one(resources, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == _one(resources, "Deployment")["metadata"]["name"]
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Pods"]["pods"]["metric"]["name"] == rule["name"]["as"]
        assert metrics["Resource"]["resource"]["name"] == "cpu"  # the fallback
        assert hpa["spec"]["minReplicas"] >= 2  # a drain never leaves zero pods taking calls
