"""The Twilio REST client (gateway/control/twilio.py) against the local fake of Twilio's Calls API over loopback:
request shapes, Basic auth, form fields exactly as documented, typed errors, the idempotent hang-up (404/20404) and
which requests retry (docs/architecture/twilio-media-streams.md#ending-a-call, #transfer, #call-status)."""

from __future__ import annotations

import asyncio
import base64
import socket
from xml.etree import ElementTree

import pytest

from gateway.control.twilio import TwilioRest, TwilioRestError, TwilioUnavailable
from tests.support.fake_twilio_rest import FakeTwilioRest


@pytest.fixture
async def fake_rest(aiohttp_server) -> FakeTwilioRest:
    rest = FakeTwilioRest()
    server = await aiohttp_server(rest.app)
    rest.url = str(server.make_url("")).rstrip("/")
    return rest


@pytest.fixture
async def client(fake_rest, http) -> TwilioRest:
    return TwilioRest(
        http, fake_rest.account_sid, fake_rest.auth_token, base_url=fake_rest.url, timeout_s=2.0, retry_delay_s=0.01
    )


CA = "CA" + "a" * 32


async def test_hang_up_posts_status_completed_with_basic_auth(client, fake_rest):
    fake_rest.add_call(CA)
    assert await client.hang_up(CA) is True
    (req,) = fake_rest.requests
    assert req.path == f"/2010-04-01/Accounts/{fake_rest.account_sid}/Calls/{CA}.json"
    assert req.method == "POST" and req.content_type.startswith("application/x-www-form-urlencoded")
    assert req.auth == (fake_rest.account_sid, fake_rest.auth_token)
    assert req.form == {"Status": ["completed"]}
    assert fake_rest.calls[CA].status == "completed"


async def test_hang_up_of_an_ended_call_is_idempotent(client, fake_rest):
    fake_rest.add_call(CA)
    fake_rest.end_call(CA)  # the caller hung up first
    assert await client.hang_up(CA) is False  # 404 / 20404: already over, not an error
    assert await client.hang_up(CA) is False
    assert [r.status for r in fake_rest.requests] == [404, 404]


async def test_hang_up_retries_once_on_a_server_error_but_not_on_a_client_error(client, fake_rest):
    fake_rest.add_call(CA)
    fake_rest.fail_next = [(503, 20500, "Service unavailable")]
    assert await client.hang_up(CA) is True
    assert len(fake_rest.requests) == 2
    fake_rest.add_call(CA)
    fake_rest.fail_next = [(400, 21218, "Invalid Status"), (400, 21218, "Invalid Status")]
    with pytest.raises(TwilioRestError) as err:
        await client.hang_up(CA)
    assert (err.value.status, err.value.code, err.value.message) == (400, 21218, "Invalid Status")
    assert len(fake_rest.requests) == 3


async def test_wrong_credentials_raise_a_typed_error_with_twilios_code(fake_rest, http):
    bad = TwilioRest(http, fake_rest.account_sid, "wrong", base_url=fake_rest.url)
    with pytest.raises(TwilioRestError) as err:
        await bad.hang_up(CA)
    assert err.value.status == 401 and err.value.code == 20003 and not err.value.already_ended
    assert "wrong" not in repr(bad)  # the token never shows


async def test_redirect_sends_the_twiml(client, fake_rest):
    fake_rest.add_call(CA)
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15550003333</Dial></Response>'
    call = await client.redirect(CA, twiml=twiml)
    assert call.sid == CA and call.status == "in-progress"
    assert fake_rest.requests[-1].form == {"Twiml": [twiml]}
    assert fake_rest.calls[CA].redirects == [twiml]
    await client.redirect(CA, url="https://voice.example.com/twilio/voice")
    assert fake_rest.requests[-1].form == {"Url": ["https://voice.example.com/twilio/voice"], "Method": ["POST"]}


async def test_redirect_is_not_retried(client, fake_rest):
    fake_rest.add_call(CA)
    fake_rest.fail_next = [(500, 20500, "Internal")]
    with pytest.raises(TwilioRestError):
        await client.redirect(CA, twiml="<Response/>")
    assert len(fake_rest.requests) == 1


async def test_create_call_sends_documented_fields_and_one_field_per_status_event(client, fake_rest):
    twiml = '<Response><Connect><Stream url="wss://x/twilio/stream"/></Connect></Response>'
    call = await client.create_call(
        to="+15550002222", from_="+15550001111", twiml=twiml, status_callback="https://voice.example.com/twilio/status"
    )
    assert call.sid.startswith("CA") and call.status == "queued" and call.to == "+15550002222"
    (req,) = fake_rest.creates()
    assert req.path == f"/2010-04-01/Accounts/{fake_rest.account_sid}/Calls.json"
    assert req.form == {
        "To": ["+15550002222"],
        "From": ["+15550001111"],
        "Twiml": [twiml],
        "StatusCallback": ["https://voice.example.com/twilio/status"],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
    }
    ElementTree.fromstring(req.form["Twiml"][0])


async def test_create_call_is_never_retried(client, fake_rest):
    fake_rest.fail_next = [(503, 20500, "busy")]
    with pytest.raises(TwilioRestError) as err:
        await client.create_call(to="+15550002222", from_="+15550001111", twiml="<Response/>")
    assert err.value.retryable and len(fake_rest.creates()) == 1


async def test_a_slow_twilio_is_unavailable_after_the_timeout(fake_rest, http):
    fake_rest.add_call(CA)
    fake_rest.delay_s = 1.0
    slow = TwilioRest(
        http, fake_rest.account_sid, fake_rest.auth_token, base_url=fake_rest.url, timeout_s=0.2, retry_delay_s=0.01
    )
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(TwilioUnavailable):
        await slow.hang_up(CA)  # tried twice
    assert asyncio.get_running_loop().time() - t0 < 1.0


async def test_an_unreachable_twilio_is_unavailable(http):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    rest = TwilioRest(http, "AC" + "1" * 32, "t", base_url=f"http://127.0.0.1:{port}", retry_delay_s=0.01)
    with pytest.raises(TwilioUnavailable) as err:
        await rest.create_call(to="+15550002222", from_="+15550001111", twiml="<Response/>")
    assert err.value.status == 0


@pytest.mark.parametrize("sid", ["../../Accounts", "CA/1", "", "CA 1"])
async def test_sids_that_could_change_the_path_are_refused_before_any_request(client, fake_rest, sid):
    with pytest.raises(ValueError):
        await client.hang_up(sid)
    assert fake_rest.requests == []


async def test_fake_refuses_malformed_requests(fake_rest, http):
    """The fake itself must catch shape errors (or the tests above would prove nothing)."""
    auth = {
        "Authorization": "Basic "
        + base64.b64encode(f"{fake_rest.account_sid}:{fake_rest.auth_token}".encode()).decode()
    }
    base = f"{fake_rest.url}/2010-04-01/Accounts/{fake_rest.account_sid}"
    cases = [
        ({"From": "+15550001111", "Twiml": "<Response/>"}, 21201),
        ({"To": "+15550002222", "Twiml": "<Response/>"}, 21603),
        ({"To": "+15550002222", "From": "+15550001111"}, 21205),
        ({"To": "+15550002222", "From": "+15550001111", "Twiml": "<Respons"}, 12100),
        ({"To": "+15550002222", "From": "+15550001111", "Twiml": "<Response/>", "Bogus": "1"}, 20001),
    ]
    for form, code in cases:
        async with http.post(base + "/Calls.json", data=form, headers=auth) as r:
            assert r.status == 400 and (await r.json())["code"] == code, form
    async with http.post(base + "/Calls.json", json={"To": "+1"}, headers=auth) as r:
        assert r.status == 400
