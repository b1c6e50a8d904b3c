"""The simulator's carrier sides (gateway/simulator/carrier_side.py, sides/): one per carrier of the registry, each
calling its carrier's webhook where the carrier's description says, signing with the variable it names, and signing
the way the gateway's own pure check of that carrier accepts (and a forged secret the way it refuses)."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.carriers.registry import CARRIERS, carrier, names
from gateway.carriers.spec import Refusal, Webhook
from gateway.simulator.carrier_side import CARRIER_SIDES, CallIds, new_carrier_side, secret_env
from gateway.simulator.sides.common import CarrierSide

URL = "https://voice.example.com"
IDS = CallIds(
    call_sid="CA" + "1" * 32,
    account_sid="AC" + "0" * 32,
    stream_sid="MZ" + "2" * 32,
    from_="+15550001111",
    to="+15550002222",
)
_SEED = bytes(range(32))
_PUBLIC = base64.b64encode(
    Ed25519PrivateKey.from_private_bytes(_SEED)
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()

# carrier: (the simulator's secret, the gateway's, a forged simulator secret)
SECRETS = {
    "twilio": ("auth-token", "auth-token", "guessed"),
    "signalwire": ("PSK-key", "PSK-key", "PSK-guess"),
    "telnyx": (base64.b64encode(_SEED).decode(), _PUBLIC, base64.b64encode(bytes(32)).decode()),
    "plivo": ("plivo-token", "plivo-token", "plivo-guess"),
    "vonage": ("v" * 32, "v" * 32, "w" * 32),
    "exotel": ("key:secret", "key:secret", "key:guess"),
    "audiosocket": ("pbx-secret", "pbx-secret", "pbx-guess"),
    "freeswitch": ("fs-secret", "fs-secret", "fs-guess"),
    "asterisk-ws": ("ast-secret", "ast-secret", "ast-guess"),
}


def test_there_is_one_side_per_carrier_of_the_registry() -> None:
    assert tuple(CARRIER_SIDES) == names()
    with pytest.raises(ValueError, match="unknown carrier 'skype'"):
        new_carrier_side("skype", IDS)


@pytest.mark.parametrize("name", names())
def test_each_side_has_every_member_the_caller_uses(name: str) -> None:
    """The caller reads these of any side (gateway/simulator/caller.py): a side written without one fails mid-call
    (the PBX sides once lacked ``warnings``, and their e2e calls died in the simulator's reader)."""
    side = new_carrier_side(name, IDS)
    members = set(CarrierSide.__annotations__) | {
        n for n in vars(CarrierSide) if not n.startswith("_") and callable(getattr(CarrierSide, n))
    }
    missing = sorted(m for m in members if not hasattr(side, m))
    assert missing == [], f"{name}: {missing}"
    assert side.warnings == []


@pytest.mark.parametrize("name", names())
def test_each_side_calls_the_webhook_its_description_declares(name: str) -> None:
    spec = carrier(name)
    request = new_carrier_side(name, IDS).webhook(IDS, URL, "")
    assert request.path == spec.webhook_path and request.method in spec.webhook_methods
    assert not request.signed


def test_the_simulator_signs_with_the_carriers_own_variable_but_telnyxs_private_key() -> None:
    assert {n: secret_env(n) for n in names()} == {
        "twilio": "TWILIO_AUTH_TOKEN",
        "signalwire": "SIGNALWIRE_SIGNING_KEY",
        "telnyx": "TELNYX_SIMULATOR_PRIVATE_KEY",
        "plivo": "PLIVO_AUTH_TOKEN",
        "vonage": "VONAGE_SIGNATURE_SECRET",
        "exotel": "EXOTEL_BASIC_AUTH",
        "audiosocket": "AUDIOSOCKET_SECRET",
        "freeswitch": "FREESWITCH_SECRET",
        "asterisk-ws": "ASTERISK_WS_SECRET",
    }


def _as_the_gateway_reads_it(request: Any) -> Webhook:
    form = request.form or {}
    body = request.body if request.body is not None else b""
    if request.body is not None and not form:
        form = dict(parse_qsl(body.decode()))  # Telnyx: the form travels as the signed raw body
    return Webhook(
        method=request.method,
        url=URL + request.path,
        headers=request.headers,
        query=request.query or {},
        body=body,
        form={k: [v] for k, v in form.items()},
        remote="192.0.2.1",
        now=time.time(),
    )


@pytest.mark.parametrize("spec", CARRIERS, ids=lambda s: s.name)
def test_a_signed_webhook_passes_the_gateways_check_and_a_forged_one_does_not(spec: Any) -> None:
    ours, theirs, forged = SECRETS[spec.name]
    door = spec.door(spec.options(), {spec.secret_envs[0]: theirs})
    signed = new_carrier_side(spec.name, IDS).webhook(IDS, URL, ours)
    assert signed.signed
    assert spec.verify(_as_the_gateway_reads_it(signed), door) is None
    refusal = spec.verify(_as_the_gateway_reads_it(new_carrier_side(spec.name, IDS).webhook(IDS, URL, forged)), door)
    assert isinstance(refusal, Refusal) and refusal.status == 403
