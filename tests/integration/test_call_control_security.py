"""The call-control doors (``POST /calls``, ``POST /twilio/status``) against what anyone can send (docs/security.md):
malformed bodies and headers are a 4xx, never a 500; ``POST /calls`` dials only what ``[twilio] dial_allow`` allows
(E.164 numbers when it is empty), and a refused request never reaches Twilio. Real gateway on loopback, Twilio's
REST API played by tests/support/fake_twilio_rest.py."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree

import pytest

from gateway.logs import mask_number
from gateway.security import twilio_signature
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.logcapture import capture_call_logs, events
from tests.unit.test_log_schema import check_event

AUTH = "tw-auth-token"
API_KEY = "gw-api-key"
OK_BODY = {"to": "+15550002222", "from": "+15550001111"}


@pytest.fixture
async def fake_rest(aiohttp_server: Any) -> FakeTwilioRest:
    rest = FakeTwilioRest(auth_token=AUTH)
    server = await aiohttp_server(rest.app)
    rest.url = str(server.make_url("")).rstrip("/")
    return rest


@pytest.fixture
def gateway(start_gateway: Any, fake_rest: FakeTwilioRest, tmp_path: Any) -> Any:
    async def start(toml: str = "") -> Any:
        cfg = tmp_path / "gateway.toml"
        cfg.write_text(f'{toml}\n[profiles.default]\ngreeting = ""\n')
        return await start_gateway(
            str(cfg),
            TWILIO_ACCOUNT_SID=fake_rest.account_sid,
            TWILIO_AUTH_TOKEN=AUTH,
            TWILIO_API_BASE_URL=fake_rest.url,
            GATEWAY_API_KEY=API_KEY,
        )

    return start


async def raw_request(gw: Any, path: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request byte for byte (aiohttp's client would refuse or re-encode most of these); (status, body)."""
    host, port = gw.host, gw.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            + head
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ", 2)[1]), rest.partition(b"\r\n\r\n")[2]


def calls_head(key: bytes = API_KEY.encode()) -> bytes:
    return b"Content-Type: application/json\r\nAuthorization: Bearer " + key + b"\r\n"


async def post_calls(http: Any, gw: Any, body: Any) -> tuple[int, Any]:
    async with http.post(gw.base_url + "/calls", json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        return r.status, await r.json()


async def refusals(http: Any, gw: Any, reason: str) -> float:
    async with http.get(gw.base_url + "/metrics") as r:
        text = await r.text()
    line = f'voice_gateway_call_refusals_total{{reason="{reason}",stage="outbound"}} '
    return next((float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)), 0.0)


# ---- malformed POST /calls ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body,status",
    [
        (b"[" * 60000, 400),  # under the 64 KiB body limit: Python's JSON decoder would recurse into a RecursionError
        (b"[" * 100000, 413),  # over it: refused before it is read
        (b'{"to": "+15550002222", "from": "\xff\xfe"}', 400),  # invalid UTF-8
        (b'{"to": "+15550002222", "from": []}', 400),  # an unhashable 'from' used to reach a dict lookup
        (b'{"to": "+15550002222", "from": {"a": 1}}', 400),
        (b'{"to": ', 400),
    ],
)
async def test_malformed_calls_bodies_are_4xx_and_never_reach_twilio(gateway, fake_rest, body, status):
    gw = await gateway()
    got, answer = await raw_request(gw, "/calls", calls_head(), body)
    assert got == status, answer
    if status == 400:
        assert b'"error"' in answer  # the JSON error shape of this API
    assert fake_rest.requests == []


async def test_an_authorization_header_that_is_not_utf8_is_a_401(gateway, fake_rest):
    gw = await gateway()
    got, _ = await raw_request(gw, "/calls", calls_head(b"\xff\xfe"), b"{}")
    assert got == 401
    assert fake_rest.requests == []


@pytest.mark.parametrize(
    "body,why",
    [
        ({**OK_BODY, "variables": {"name": "Ada\x00"}}, "XML"),
        ({**OK_BODY, "variables": {"name": "Ada\x1b[31m"}}, "XML"),
        ({**OK_BODY, "variables": {"name": "\ufffe"}}, "XML"),
        ({**OK_BODY, "variables": {"name": "half a pair \ud800"}}, "XML"),  # JSON's \ud800 escape decodes to this
        ({**OK_BODY, "to": "sip:alice\x08@pbx.example.com"}, "sip: URI"),
        ({**OK_BODY, "to": "sip:alice@evil.example.com?x=@pbx.example.com"}, "sip: URI"),  # would match the pattern
    ],
)
async def test_text_that_would_break_or_bend_the_twiml_is_a_422(gateway, http, fake_rest, body, why):
    gw = await gateway('[twilio]\ndial_allow = ["+1555*", "sip:*@pbx.example.com"]')
    status, answer = await post_calls(http, gw, body)
    assert status == 422 and why in answer["error"], answer
    assert fake_rest.requests == []


# ---- malformed POST /twilio/status --------------------------------------------------------------------------------
FORM_HEAD = b"Content-Type: application/x-www-form-urlencoded\r\n"


@pytest.mark.parametrize(
    "head,body",
    [
        (FORM_HEAD, b"CallSid=\xff\xfe"),
        (FORM_HEAD, b"CallSid=CA1&CallStatus=\xc3"),
        (b"Content-Type: application/x-www-form-urlencoded; charset=no-such-charset\r\n", b"CallSid=CA1"),
        (FORM_HEAD + b"Content-Encoding: gzip\r\n", b"CallSid=CA1"),
    ],
)
async def test_malformed_status_callback_bodies_are_400(gateway, head, body):
    gw = await gateway()
    got, answer = await raw_request(gw, "/twilio/status", head, body)
    assert got == 400 and b"form data" in answer, answer


async def test_a_call_duration_too_long_to_be_a_number_is_logged_as_none(gateway, http):
    gw = await gateway()
    form = {"CallSid": "CA" + "5" * 32, "CallStatus": "completed", "CallDuration": "9" * 5000}
    headers = {"X-Twilio-Signature": twilio_signature(AUTH, gw.base_url + "/twilio/status", form)}
    with capture_call_logs() as logs:
        async with http.post(gw.base_url + "/twilio/status", data=form, headers=headers) as r:
            assert r.status == 204
    (line,) = events(logs, "call.status")
    assert line["call_duration_s"] is None


# ---- the destination allow-list -----------------------------------------------------------------------------------
async def test_without_dial_allow_only_e164_numbers_are_dialled(gateway, http, fake_rest):
    gw = await gateway()
    status, body = await post_calls(http, gw, OK_BODY)
    assert status == 201, body
    with capture_call_logs() as logs:
        for to in ("sip:alice@pbx.example.com", "client:bob"):
            status, body = await post_calls(http, gw, {**OK_BODY, "to": to})
            assert status == 422 and body["reason"] == "destination_not_allowed", body
    assert [r.one("To") for r in fake_rest.creates()] == ["+15550002222"]
    refused = events(logs, "outbound.refused")
    assert [(e["reason"], e["status"]) for e in refused] == [("destination_not_allowed", 422)] * 2
    assert [e["to"] for e in refused] == [mask_number("sip:alice@pbx.example.com"), mask_number("client:bob")]
    assert "alice@pbx" not in str(refused) and "client:bob" not in str(refused)
    for line in logs:
        check_event(line)
    assert await refusals(http, gw, "destination_not_allowed") == 2


@pytest.mark.parametrize(
    "to,allowed",
    [
        ("+15550002222", True),
        ("+15559999999", True),
        ("+447700900123", False),  # a well-formed number, not in the operator's countries
        ("+19005550100", False),  # a premium-rate style number outside the patterns
        ("sip:alice@pbx.example.com", True),
        ("sip:alice@pbx.example.com.evil.net", False),
        ("sip:alice@evil.example.com", False),
        ("client:bob", False),
    ],
)
async def test_dial_allow_patterns_decide_what_is_dialled(gateway, http, fake_rest, to, allowed):
    gw = await gateway('[twilio]\ndial_allow = ["+1555*", "sip:*@pbx.example.com"]')
    with capture_call_logs() as logs:
        status, body = await post_calls(http, gw, {**OK_BODY, "to": to})
    if allowed:
        assert status == 201, body
        (req,) = fake_rest.creates()
        assert req.one("To") == to
        ElementTree.fromstring(req.one("Twiml"))
    else:
        assert status == 422 and body["reason"] == "destination_not_allowed", body
        assert "dial_allow" in body["error"]
        assert fake_rest.requests == []
        (line,) = events(logs, "outbound.refused")
        assert line["to"] == mask_number(to) and line["to"] != to


async def test_client_names_need_a_client_pattern(gateway, http, fake_rest):
    gw = await gateway('[twilio]\ndial_allow = ["client:*"]')
    assert (await post_calls(http, gw, {**OK_BODY, "to": "client:bob"}))[0] == 201
    assert (await post_calls(http, gw, OK_BODY))[0] == 422  # a list without "+" patterns allows no number
    assert [r.one("To") for r in fake_rest.creates()] == ["client:bob"]
