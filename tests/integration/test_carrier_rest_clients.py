"""Each carrier's call-control client (gateway/control/) against the local fake of its REST API over loopback:
request shapes, auth, ids and bodies exactly as documented, the "already ended" answers, typed failures, and which
control a call gets at which door (docs/how-to/call-control.md#carriers)."""

from __future__ import annotations

import time
from typing import Any
from xml.etree import ElementTree

import pytest
from aiohttp import web

from gateway.call.shell.carrier_control import (
    NoCarrierControl,
    PlivoControl,
    TelnyxControl,
    TwilioControl,
    carrier_control,
)
from gateway.config import load_settings
from gateway.control import dial
from gateway.control.plivo import PlivoCallControl
from gateway.control.telnyx import TelnyxCallControl
from gateway.control.twilio import TwilioRest
from gateway.errors import CallControlFailed
from tests.support.fake_plivo_rest import FakePlivoRest
from tests.support.fake_telnyx_rest import FakeTelnyxRest
from tests.support.fake_twilio_rest import FakeTwilioRest

CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
UUID = "2d6e8f1a-5c4b-4d0f-9a3e-1b2c3d4e5f60"


async def _serve(aiohttp_server: Any, fake: Any, prefix: str = "") -> Any:
    app = fake.app
    if prefix:
        app = web.Application()
        app.add_subapp(prefix, fake.app)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- Telnyx ------------------------------------------------------------------------------------------------------
@pytest.fixture
async def telnyx(aiohttp_server: Any) -> FakeTelnyxRest:
    return await _serve(aiohttp_server, FakeTelnyxRest())


async def test_telnyx_hangup_is_a_bearer_post_to_the_call_control_id_and_idempotent(telnyx, http):
    client = TelnyxCallControl(http, telnyx.api_key, base_url=telnyx.url)
    assert await client.hang_up(CCID) is True
    assert await client.hang_up(CCID) is False  # 422 / 90018: already over, not an error
    first, second = telnyx.requests
    assert first.method == "POST" and first.path == f"/v2/calls/{CCID}/actions/hangup"
    assert first.bearer == telnyx.api_key and first.content_type.startswith("application/json")
    assert first.body == {} and (first.status, second.status) == (200, 422)


async def test_telnyx_transfer_and_dtmf_send_the_documented_bodies(telnyx, http):
    client = TelnyxCallControl(http, telnyx.api_key, base_url=telnyx.url)
    await client.transfer(CCID, "+15550003333")
    await client.send_dtmf(CCID, "12#")
    transfer, dtmf = telnyx.requests
    assert transfer.path.endswith("/actions/transfer") and transfer.body == {"to": "+15550003333"}
    assert dtmf.path.endswith("/actions/send_dtmf") and dtmf.body == {"digits": "12#", "duration_millis": 250}
    assert telnyx.transfers == {CCID: "+15550003333"}


async def test_telnyx_failures_carry_status_and_code_and_a_bad_id_sends_nothing(telnyx, http):
    with pytest.raises(CallControlFailed) as err:
        await TelnyxCallControl(http, "wrong", base_url=telnyx.url).hang_up(CCID)
    assert (err.value.status, err.value.code) == (401, 10009)
    client = TelnyxCallControl(http, telnyx.api_key, base_url=telnyx.url)
    telnyx.fail_next = [(500, "90000", "Internal error")]
    with pytest.raises(CallControlFailed) as err:
        await client.transfer(CCID, "+15550003333")  # not retried: a transfer must not run twice
    assert (err.value.status, err.value.code) == (500, 90000)
    n = len(telnyx.requests)
    with pytest.raises(CallControlFailed) as err:
        await client.hang_up("v3:../../calls")
    assert err.value.status == 0 and len(telnyx.requests) == n


# ---- Plivo -------------------------------------------------------------------------------------------------------
@pytest.fixture
async def plivo(aiohttp_server: Any) -> FakePlivoRest:
    return await _serve(aiohttp_server, FakePlivoRest())


async def test_plivo_hangup_deletes_the_call_with_basic_auth_and_404_means_already_ended(plivo, http):
    client = PlivoCallControl(http, plivo.auth_id, plivo.auth_token, base_url=plivo.url)
    assert await client.hang_up(UUID) is True
    assert await client.hang_up(UUID) is False
    first, second = plivo.requests
    assert first.method == "DELETE" and first.path == f"/v1/Account/{plivo.auth_id}/Call/{UUID}/"
    assert first.auth == (plivo.auth_id, plivo.auth_token) and (first.status, second.status) == (204, 404)


async def test_plivo_dtmf_posts_the_digits_on_the_callers_leg(plivo, http):
    await PlivoCallControl(http, plivo.auth_id, plivo.auth_token, base_url=plivo.url).send_dtmf(UUID, "12#")
    (req,) = plivo.requests
    assert req.method == "POST" and req.path == f"/v1/Account/{plivo.auth_id}/Call/{UUID}/DTMF/"
    assert req.body == {"digits": "12#", "leg": "aleg"} and req.status == 202


async def test_plivo_failures_carry_the_status_and_error_text(plivo, http):
    with pytest.raises(CallControlFailed) as err:
        await PlivoCallControl(http, plivo.auth_id, "wrong", base_url=plivo.url).hang_up(UUID)
    assert err.value.status == 401 and err.value.code is None and "Authentication" in err.value.message
    with pytest.raises(CallControlFailed) as err:
        await PlivoCallControl(http, plivo.auth_id, plivo.auth_token, base_url=plivo.url).send_dtmf(UUID, "1x")
    assert err.value.status == 0 and len(plivo.requests) == 1  # refused before sending


# ---- the <Dial> documents, and the controls each door gets --------------------------------------------------------
def _settings(**env: str) -> Any:
    return load_settings(None, env={"GATEWAY_TOKEN_SECRET": "dial-secret", "AGENT_URL": "ws://127.0.0.1:9/x", **env})


@pytest.fixture
async def gateway(aiohttp_server: Any, plivo: FakePlivoRest, telnyx: FakeTelnyxRest) -> Any:
    from gateway.app import create_app

    settings = _settings(
        PLIVO_AUTH_ID=plivo.auth_id,
        PLIVO_AUTH_TOKEN=plivo.auth_token,
        TELNYX_API_KEY=telnyx.api_key,
    )
    server = await aiohttp_server(create_app(settings))
    return settings, str(server.make_url("")).rstrip("/")


async def test_a_plivo_transfer_points_plivo_at_a_signed_dial_document_the_gateway_serves(gateway, plivo, http):
    settings, base = gateway
    import dataclasses

    from gateway.carriers.plivo import PlivoSettings
    from gateway.config import CarrierSettings

    settings = dataclasses.replace(settings, carriers=CarrierSettings(plivo=PlivoSettings(api_base_url=plivo.url)))
    control = carrier_control("plivo", settings, http, base)
    assert isinstance(control, PlivoControl)
    await control.transfer(UUID, "+15550003333")
    (req,) = plivo.requests
    assert req.method == "POST" and req.path == f"/v1/Account/{plivo.auth_id}/Call/{UUID}/"
    assert set(req.body) == {"legs", "aleg_url", "aleg_method"} and req.body["legs"] == "aleg"
    url, xml = plivo.transfers[UUID]
    assert url.startswith(base + "/control/dial/plivo/")
    root = ElementTree.fromstring(xml)
    assert [(e.tag, e.text) for e in root.iter() if e.tag == "Number"] == [("Number", "15550003333")]
    # The token covers this destination and this carrier only, and expires.
    async with http.get(url.replace("to=%2B15550003333", "to=%2B19005550000")) as resp:
        assert resp.status == 403
    async with http.get(url.replace("/dial/plivo/", "/dial/signalwire/")) as resp:
        assert resp.status == 403
    stale = dial.dial_url(base, settings.secrets.token_secret, "plivo", "+15550003333", time.time() - 2 * dial.TTL_S)
    async with http.get(stale) as resp:
        assert resp.status == 403


async def test_a_signalwire_call_uses_the_laml_api_at_its_space_and_transfers_by_url(aiohttp_server, http):
    fake = await _serve(aiohttp_server, FakeTwilioRest(account_sid="b3877c40-da60-4998-90ad-b792e98472af"), "/api/laml")
    sid = "a1b2c3d4-0000-1111-2222-333344445555"
    fake.add_call(sid)
    rest = TwilioRest(http, fake.account_sid, fake.auth_token, base_url=fake.url + "/api/laml")
    control = TwilioControl(rest, "signalwire", lambda to: f"https://gw.example.com/control/dial/signalwire/t?to={to}")
    await control.transfer(sid, "+15550003333")
    (req,) = fake.requests
    assert req.path == f"/api/laml/2010-04-01/Accounts/{fake.account_sid}/Calls/{sid}.json"
    assert req.form == {"Url": ["https://gw.example.com/control/dial/signalwire/t?to=+15550003333"], "Method": ["POST"]}
    assert await control.hang_up(sid) is True
    assert await control.hang_up(sid) is False  # over: 404


def test_each_door_gets_its_own_carriers_control_or_none_with_a_reason():
    full = _settings(
        TWILIO_ACCOUNT_SID="AC" + "1" * 32,
        TWILIO_AUTH_TOKEN="t",
        TELNYX_API_KEY="k",
        PLIVO_AUTH_ID="MA1",
        PLIVO_AUTH_TOKEN="p",
    )
    http: Any = object()  # never used: building a control sends nothing
    kinds = {door: type(carrier_control(door, full, http, "http://gw")) for door in
             ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel", "softphone")}  # fmt: skip
    assert kinds == {
        "twilio": TwilioControl,
        "signalwire": NoCarrierControl,  # no space_url / project / token
        "telnyx": TelnyxControl,
        "plivo": PlivoControl,
        "vonage": NoCarrierControl,
        "exotel": NoCarrierControl,
        "softphone": NoCarrierControl,
    }
    bare = _settings()
    reasons = {
        door: getattr(carrier_control(door, bare, http, "http://gw"), "unavailable_reason", "")
        for door in ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel")
    }
    assert reasons == {
        "twilio": "twilio_not_configured",
        "signalwire": "signalwire_not_configured",
        "telnyx": "telnyx_not_configured",
        "plivo": "plivo_not_configured",
        "vonage": "not_on_this_carrier",
        "exotel": "not_on_this_carrier",
    }
