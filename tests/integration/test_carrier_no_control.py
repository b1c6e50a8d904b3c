"""A carrier without a call-control API (Vonage; Exotel alike) on the real app (fake agent): ``transfer_call`` is
answered as an ``is_error`` tool result, nothing is sent to any carrier's API, and the call goes on until the caller
hangs up (docs/how-to/call-control.md#carriers)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from gateway.outbound import token_subject
from gateway.security import mint_call_token
from tests.support.carrier_fixtures import fixture, text
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.logcapture import capture_call_logs, events, wait_event


async def test_a_vonage_transfer_is_not_available_and_the_call_goes_on(
    start_gateway: Any, fake_agent: Any, http: Any, aiohttp_server: Any, tmp_path: Any
) -> None:
    twilio = FakeTwilioRest()
    twilio.url = str((await aiohttp_server(twilio.app)).make_url("")).rstrip("/")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[profiles.default]\ngreeting = ""\ntools = ["end_call", "transfer_call"]\n'
        'transfer_allow = ["+1555*"]\nhangup_via_rest = true\nend_call_timeout_s = 0.3\n'
    )
    gw = await start_gateway(
        str(cfg),
        TWILIO_ACCOUNT_SID=twilio.account_sid,
        TWILIO_AUTH_TOKEN=twilio.auth_token,
        TWILIO_API_BASE_URL=twilio.url,
        TELNYX_API_KEY="telnyx-key",
    )
    connected = fixture("vonage", "connected")
    subject = token_subject({}, connected["uuid"], "default")
    connected["token"] = mint_call_token(b"test-secret", subject, time.time(), 300, scope="vonage")
    with capture_call_logs() as logs:
        ws = await http.ws_connect(gw.base_url.replace("http", "ws") + "/vonage/stream")
        await ws.send_str(text(connected))
        sess = await fake_agent.session()
        await sess.send("reply.started", reply_id="resp_v", item_id="msg_v")
        await sess.send("tool.call", call_id="call_v", name="transfer_call",
                        arguments={"destination": "+15550003333", "announcement": "One moment."})  # fmt: skip
        await sess.send("reply.done", reply_id="resp_v", status="completed")
        result = await sess.next_message("tool.result", timeout=10)
        await asyncio.sleep(0.6)  # longer than end_call_timeout_s: a pending transfer would have gone out by now
        still_up = not ws.closed
        await ws.send_bytes(bytes(640))  # the caller is still there, and heard
        await ws.close()  # the caller hangs up: for Vonage, the socket closing
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert result["is_error"] is True and "not available" in json.loads(result["result"])["error"]
    assert still_up and ended["outcome"] in ("caller_hangup", "carrier_closed"), ended
    assert [e["reason"] for e in events(logs, "call.transfer_refused")] == ["not_on_this_carrier"]
    assert twilio.requests == []
