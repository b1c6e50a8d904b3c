"""Carriers as data (gateway/carriers/spec.py, registry.py; docs/how-to/carriers/adding-a-carrier.md): every carrier's
description is complete and consistent, its pure webhook/upgrade functions do what its routes promise
(docs/how-to/carriers/index.md#comparison), and the config builds each ``[carriers.NAME]`` table and reads each secret
from the descriptions alone, the flat keys of older configs included (with a deprecation warning)."""

from __future__ import annotations

import base64
import json
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.carriers import exotel, plivo, signalwire, telnyx, twilio, vonage
from gateway.carriers.base import Dialect
from gateway.carriers.registry import CARRIERS, carrier, names
from gateway.carriers.spec import (
    BUSY,
    DRAINING,
    AnswerContext,
    Call,
    CarrierDoor,
    CarrierSpec,
    Door,
    Malformed,
    Refusal,
    Upgrade,
    Webhook,
)
from gateway.config import REPO_CONFIG_DIR, CarrierSettings, load_settings
from gateway.errors import ConfigError
from gateway.security import twilio_signature

URL = "https://voice.example.com"
NOW = 1_700_000_000.0


# ---- the registry ------------------------------------------------------------------------------------------------
def test_every_carrier_is_described_once_with_its_own_routes_table_and_secrets() -> None:
    assert names() == (
        "twilio",
        "signalwire",
        "telnyx",
        "plivo",
        "vonage",
        "exotel",
        "audiosocket",
        "freeswitch",
        "asterisk-ws",
    )
    paths = [p for spec in CARRIERS for p in (spec.webhook_path, spec.stream_path) if p]
    assert len(set(paths)) == len(paths)
    envs = [env for spec in CARRIERS for env in spec.secret_envs]
    assert len(set(envs)) == len(envs) and all(env.isupper() for env in envs)
    legacy = [flat for spec in CARRIERS for flat in spec.legacy_keys]
    assert len(set(legacy)) == len(legacy) and not set(legacy) & set(names())
    for spec in CARRIERS:
        assert spec.webhook_path.startswith(f"/{spec.name}/")
        # A carrier that is not a WebSocket (AudioSocket, TCP) is served by a module of its own, without a stream path.
        assert spec.stream_path.startswith(f"/{spec.name}/") if not spec.served_by else spec.stream_path == ""
        assert issubclass(spec.options, CarrierDoor) and spec.options().enabled == "auto"
        assert spec.secrets and spec.webhook_methods and spec.webhook_body in ("form", "json", "none")
        assert set(spec.legacy_keys.values()) <= set(spec.options.__dataclass_fields__)
        assert isinstance(spec.dialect(_upgrade(spec)), Dialect)
        assert carrier(spec.name) is spec
    with pytest.raises(KeyError, match="unknown carrier 'skype'.*twilio"):
        carrier("skype")


def test_the_adding_a_carrier_page_explains_every_field_of_a_description() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "carriers" / "adding-a-carrier.md").read_text(
        encoding="utf-8"
    )
    for name in CarrierSpec.__dataclass_fields__:
        assert f"`{name}`" in page or f"{name}=" in page, (
            f"docs/how-to/carriers/adding-a-carrier.md does not mention {name}"
        )


def test_each_carrier_with_a_call_control_api_names_it_and_only_twilio_asks_for_status_callbacks() -> None:
    assert {spec.name: (spec.call_control, spec.status_callbacks) for spec in CARRIERS if spec.call_control} == {
        "twilio": ("twilio_rest", True),
        "signalwire": ("laml_rest", False),
        "telnyx": ("telnyx_call_control", False),
        "plivo": ("plivo_rest", False),
    }


def test_a_call_control_credential_alone_does_not_authenticate_a_carrier_door() -> None:
    # The REST credentials sign nothing the carrier sends: only the webhook secret keeps strangers out.
    for name, env in (
        ("telnyx", {"TELNYX_API_KEY": "k"}),
        ("plivo", {"PLIVO_AUTH_ID": "MA1"}),
        ("signalwire", {"SIGNALWIRE_PROJECT_ID": "p", "SIGNALWIRE_API_TOKEN": "t"}),
    ):
        spec = carrier(name)
        assert not spec.authenticated(spec.door(spec.options(), env)), name


# ---- each carrier's pure doors -----------------------------------------------------------------------------------
def _upgrade(spec: CarrierSpec[Any], **kw: Any) -> Upgrade:
    path = spec.stream_path.replace("{token}", "v2.tok")
    return Upgrade(
        url=kw.pop("url", "wss://voice.example.com" + path),
        headers=kw.pop("headers", {}),
        query=kw.pop("query", {}),
        path_params={"token": "v2.tok"},
        **kw,
    )


def _answer(spec: CarrierSpec[Any], call: Call, **options: Any) -> str:
    ctx = AnswerContext(
        token="v2.tok",
        stream_base="wss://voice.example.com",
        options=spec.options(**options),
        status_callback=URL + "/twilio/status",
    )
    return spec.answer(call, ctx).body


FORM = {"CallSid": ["CA1"], "From": ["+15550001111"], "To": ["+15550002222"]}


@pytest.mark.parametrize("spec", [twilio.SPEC, signalwire.SPEC, telnyx.SPEC])
def test_twilio_style_webhooks_read_the_call_sid_and_numbers(spec: CarrierSpec[Any]) -> None:
    hook = Webhook("POST", URL + spec.webhook_path, {}, {}, form=FORM)
    assert spec.read_call(hook) == Call("CA1", called="+15550002222", caller="+15550001111")
    assert spec.read_call(Webhook("POST", URL, {}, {}, form={"From": ["+1"]})) == Malformed("CallSid missing")
    assert spec.busy(DRAINING).body == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>' + DRAINING + "</Say><Hangup/></Response>"
    )


def test_twilio_answers_twiml_with_the_token_numbers_and_status_callback() -> None:
    body = _answer(twilio.SPEC, Call("CA1", "+2", "+1"))
    assert body == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://voice.example.com/twilio/stream"'
        ' statusCallback="https://voice.example.com/twilio/status" statusCallbackMethod="POST">'
        '<Parameter name="token" value="v2.tok"/><Parameter name="from" value="+1"/>'
        '<Parameter name="to" value="+2"/></Stream></Connect></Response>'
    )


def test_twilio_checks_its_webhook_and_requires_its_upgrade_signature() -> None:
    door = Door(CarrierDoor(), {"auth_token": "tok"})
    url = URL + "/twilio/voice"
    signed = {"X-Twilio-Signature": twilio_signature("tok", url, {"CallSid": "CA1"})}
    assert twilio.SPEC.verify(Webhook("POST", url, signed, {}, form={"CallSid": ["CA1"]}), door) is None
    assert twilio.SPEC.verify(Webhook("POST", url, signed, {}, form={"CallSid": ["CA2"]}), door) == Refusal(
        "bad signature", "invalid signature"
    )
    upgrade = _upgrade(twilio.SPEC)
    good = {"X-Twilio-Signature": twilio_signature("tok", upgrade.url, {})}
    assert twilio.SPEC.check_upgrade(_upgrade(twilio.SPEC, headers=good), door) is None
    assert twilio.SPEC.check_upgrade(upgrade, door) == Refusal("missing_signature", "invalid signature")
    assert twilio.SPEC.check_upgrade(_upgrade(twilio.SPEC, headers={"X-Twilio-Signature": "x"}), door).reason == (
        "bad_signature"
    )


def test_signalwire_asks_for_its_codec_and_checks_an_upgrade_signature_only_when_sent() -> None:
    assert 'codec="L16@24000h"' in _answer(signalwire.SPEC, Call("CA1", "+2", "+1"), codec="L16@24000h")
    door = Door(signalwire.SignalWireSettings(), {"signing_key": "PSK"})
    assert signalwire.SPEC.check_upgrade(_upgrade(signalwire.SPEC), door) is None
    forged = _upgrade(signalwire.SPEC, headers={"X-SignalWire-Signature": "x"})
    assert signalwire.SPEC.check_upgrade(forged, door) == Refusal("bad upgrade signature")


def test_telnyx_verifies_the_raw_body_with_its_ed25519_key_within_the_replay_window() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    door = Door(telnyx.TelnyxSettings(), {"public_key": public})
    body, ts = b"CallSid=v3%3Aabc", str(int(NOW))
    headers = {
        telnyx.TIMESTAMP_HEADER: ts,
        telnyx.SIGNATURE_HEADER: base64.b64encode(key.sign(ts.encode() + b"|" + body)).decode(),
    }
    assert telnyx.SPEC.signs_raw_body
    assert telnyx.SPEC.verify(Webhook("POST", URL, headers, {}, body=body, now=NOW), door) is None
    assert telnyx.SPEC.verify(Webhook("POST", URL, headers, {}, body=body, now=NOW + 3600), door) == Refusal(
        "bad signature"
    )
    assert 'bidirectionalMode="rtp"' in _answer(telnyx.SPEC, Call("v3:abc", "+2", "+1"))


def test_plivo_carries_the_token_in_the_path_and_the_numbers_as_digits() -> None:
    hook = Webhook("POST", URL, {}, {}, form={"CallUUID": ["c-1"], "From": ["+1 555-0001"], "To": ["18005551212"]})
    call = plivo.SPEC.read_call(hook)
    assert call == Call("c-1", called="+18005551212", caller="+15550001")  # as the stream will present them
    body = _answer(plivo.SPEC, call)
    assert ">wss://voice.example.com/plivo/stream/v2.tok</Stream>" in body
    assert 'extraHeaders="to=18005551212,from=15550001"' in body
    assert plivo.SPEC.read_call(Webhook("POST", URL, {}, {}, form={})) == Malformed("CallUUID missing")
    assert "<Speak>" in plivo.SPEC.busy(BUSY).body
    dialect = plivo.SPEC.dialect(_upgrade(plivo.SPEC))
    assert isinstance(dialect, plivo.PlivoStream) and dialect.transport_params == {"token": "v2.tok"}


def test_vonage_reads_query_or_json_and_answers_an_ncco() -> None:
    query = {"uuid": "u-1", "from": "1555", "to": "1800"}
    assert vonage.SPEC.read_call(Webhook("GET", URL, {}, query)) == Call("u-1", called="+1800", caller="+1555")
    posted = Webhook("POST", URL, {}, {}, json={"uuid": "u-2", "to": "1800"}, json_sent=True)
    assert vonage.SPEC.read_call(posted) == Call("u-2", called="+1800", caller="")
    assert vonage.SPEC.read_call(Webhook("POST", URL, {}, {}, json=None, json_sent=True)) == Malformed(
        "answer body is not a JSON object"
    )
    assert vonage.SPEC.read_call(Webhook("GET", URL, {}, {})) == Malformed("uuid missing")
    answer = vonage.SPEC.answer(
        Call("u-1", "+1800", "+1555"),
        AnswerContext("v2.tok", "wss://voice.example.com", vonage.VonageSettings(sample_rate=8000)),
    )
    (action,) = json.loads(answer.body)
    assert answer.content_type == "application/json" and action["endpoint"][0]["content-type"] == "audio/l16;rate=8000"
    assert action["endpoint"][0]["headers"] == {"token": "v2.tok", "uuid": "u-1", "from": "+1555", "to": "+1800"}
    assert json.loads(vonage.SPEC.busy(BUSY).body) == [{"action": "talk", "text": BUSY}]
    door = Door(vonage.VonageSettings(), {"signature_secret": "s" * 32})
    token = jwt.encode({"iat": int(NOW)}, "s" * 32, algorithm="HS256")
    assert vonage.SPEC.verify(Webhook("GET", URL, {"Authorization": f"Bearer {token}"}, {}, now=NOW), door) is None
    assert vonage.SPEC.verify(Webhook("GET", URL, {}, {}, now=NOW), door) == Refusal("bad signature")


def test_exotel_authenticates_by_basic_auth_or_source_address_at_both_doors() -> None:
    basic = "Basic " + base64.b64encode(b"key:secret").decode()
    by_password = Door(exotel.ExotelSettings(), {"basic_auth": "key:secret"})
    by_address = Door(exotel.ExotelSettings(allowed_ips=("10.0.0.0/8",)), {"basic_auth": ""})
    assert exotel.SPEC.authenticated(by_address) and not exotel.SPEC.authenticated(Door(exotel.ExotelSettings()))
    assert exotel.SPEC.verify(Webhook("GET", URL, {"Authorization": basic}, {}), by_password) is None
    assert exotel.SPEC.verify(Webhook("GET", URL, {}, {}, remote="10.1.2.3"), by_address) is None
    assert exotel.SPEC.check_upgrade(_upgrade(exotel.SPEC, remote="192.0.2.1"), by_address) == Refusal(
        "bad credentials"
    )
    assert exotel.SPEC.read_call(Webhook("GET", URL, {}, {"CallSid": "x-1", "CallTo": "+1"})) == Call("x-1", "+1")
    doc = json.loads(_answer(exotel.SPEC, Call("x-1", "+1"), sample_rate=16000))
    assert doc == {"url": "wss://voice.example.com/exotel/stream?sample-rate=16000&token=v2.tok&to=%2B1"}
    busy = exotel.SPEC.busy(BUSY)
    assert (busy.status, busy.body, busy.content_type) == (503, "not accepting calls", "text/plain")
    dialect = exotel.SPEC.dialect(_upgrade(exotel.SPEC, query={"token": "v2.q"}))
    assert isinstance(dialect, exotel.ExotelStream) and dialect.transport_params == {"token": "v2.q"}


# ---- the config, from the descriptions ----------------------------------------------------------------------------
def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_carrier_has_its_own_table_with_its_own_keys(tmp_path: Path) -> None:
    s = load_settings(
        _toml(
            tmp_path,
            '[carriers.plivo]\ncontent_type = "audio/x-l16;rate=16000"\n'
            '[carriers.exotel]\nallowed_ips = ["10.0.0.0/8"]\nenabled = false\n',
        ),
        env={},
    )
    assert s.carriers.plivo == plivo.PlivoSettings(content_type="audio/x-l16;rate=16000")
    assert s.carriers["exotel"] == exotel.ExotelSettings(enabled=False, allowed_ips=("10.0.0.0/8",))
    assert s.carriers.signalwire == signalwire.SignalWireSettings()  # not given: its defaults
    assert set(s.carriers) == set(names())


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[carriers.signalwire]\ncodec = "G729"\n', "carriers.signalwire.codec: must be PCMU"),
        ('[carriers.telnyx]\ncodec = "L16"\n', "carriers.telnyx.codec: must be PCMU or PCMA"),
        ("[carriers.vonage]\nsample_rate = 44100\n", "carriers.vonage.sample_rate: must be 8000 or 16000"),
        ('[carriers.exotel]\nsample_rate = "8000"\n', "carriers.exotel.sample_rate: expected an integer"),
        ("[carriers.plivo]\ncodec = 1\n", "carriers.plivo.codec: unknown key"),
        ("[carriers.skype]\nenabled = true\n", "carriers.skype: unknown key"),
        ("[carriers]\ntwilio = 1\n", "carriers.twilio: expected a table"),
    ],
)
def test_a_bad_carrier_key_names_itself(tmp_path: Path, toml: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        load_settings(_toml(tmp_path, toml), env={})


def test_secrets_come_from_the_variables_the_descriptions_name() -> None:
    env = {spec.secret_envs[0]: f"secret-of-{spec.name}" for spec in CARRIERS}
    env["EXOTEL_BASIC_AUTH"] = "user:password"
    s = load_settings(None, env=env)
    assert s.secrets.twilio_auth_token == "secret-of-twilio"
    assert s.carrier_door("telnyx").secret("public_key") == "secret-of-telnyx"
    assert s.open_doors() == {name: True for name in names()}
    with pytest.raises(ConfigError, match="EXOTEL_BASIC_AUTH: must be user:password"):
        load_settings(None, env={"EXOTEL_BASIC_AUTH": "no-colon"})
    assert "secret-of" not in repr(s)


def test_exotel_enabled_without_credentials_names_both_ways_to_authenticate(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"carriers.exotel.enabled: true without EXOTEL_BASIC_AUTH \(or "
        r"carriers.exotel.allowed_ips\)",
    ):
        load_settings(_toml(tmp_path, "[carriers.exotel]\nenabled = true\n"), env={"GATEWAY_PUBLIC_URL": URL})
    s = load_settings(
        _toml(tmp_path, '[carriers.exotel]\nenabled = true\nallowed_ips = ["10.0.0.0/8"]\n'),
        env={"GATEWAY_PUBLIC_URL": URL},
    )
    assert s.open_doors() == {"exotel": True}


FLAT = {
    "signalwire_codec": ('"L16"', "signalwire", "codec", "L16"),
    "telnyx_codec": ('"PCMA"', "telnyx", "codec", "PCMA"),
    "plivo_content_type": ('"audio/x-l16;rate=8000"', "plivo", "content_type", "audio/x-l16;rate=8000"),
    "vonage_sample_rate": ("8000", "vonage", "sample_rate", 8000),
    "exotel_sample_rate": ("24000", "exotel", "sample_rate", 24000),
    "exotel_allowed_ips": ('["10.0.0.0/8"]', "exotel", "allowed_ips", ("10.0.0.0/8",)),
}


@pytest.mark.parametrize("flat", list(FLAT))
def test_the_flat_keys_of_older_configs_still_work_with_a_deprecation_warning(tmp_path: Path, flat: str) -> None:
    value, name, key, expected = FLAT[flat]
    with pytest.warns(
        FutureWarning,
        match=rf"carriers.{flat} is deprecated: write it as `{key} = ...` in "
        rf"\[carriers.{name}\]",
    ):
        s = load_settings(_toml(tmp_path, f"[carriers]\n{flat} = {value}\n[carriers.{name}]\nenabled = true\n"), env={})
    assert getattr(s.carriers[name], key) == expected and s.carriers[name].enabled is True


def test_a_flat_key_and_its_table_key_together_are_refused(tmp_path: Path) -> None:
    toml = '[carriers]\nsignalwire_codec = "PCMA"\n[carriers.signalwire]\ncodec = "PCMU"\n'
    with pytest.raises(ConfigError, match="carriers.signalwire_codec: also set as carriers.signalwire.codec"):
        load_settings(_toml(tmp_path, toml), env={})


def test_the_committed_config_uses_the_tables_and_warns_about_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = load_settings(REPO_CONFIG_DIR / "gateway.toml", env={})
    assert s.carriers == CarrierSettings()  # the committed values are the defaults


def test_carrier_settings_are_built_by_name_and_refuse_strangers() -> None:
    c = CarrierSettings(vonage=vonage.VonageSettings(sample_rate=8000))
    assert c.vonage.sample_rate == 8000 and c.twilio == CarrierDoor()
    with pytest.raises(TypeError, match="unknown carrier 'skype'"):
        CarrierSettings(skype=CarrierDoor())
    with pytest.raises(TypeError, match="carriers.vonage: expected VonageSettings"):
        CarrierSettings(vonage=CarrierDoor())
    with pytest.raises(AttributeError):
        c.skype  # noqa: B018


def test_time_is_an_argument_not_a_clock_read() -> None:
    # The pure functions take 'now' from the Webhook: a signature made an hour ago is refused at any real time.
    token = jwt.encode({"iat": int(time.time()) - 3600}, "s" * 32, algorithm="HS256")
    door = Door(vonage.VonageSettings(), {"signature_secret": "s" * 32})
    hook = Webhook("GET", URL, {"Authorization": f"Bearer {token}"}, {}, now=time.time())
    assert vonage.SPEC.verify(hook, door) == Refusal("bad signature")
