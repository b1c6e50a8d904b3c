"""Who may connect (docs/security.md; docs/architecture/twilio-media-streams.md#signatures): forged or missing webhook
signatures, upgrade signatures and per-call tokens are refused, and a refused stream never opens an agent session
(counted at the fake agent, which would bill the API key in production)."""

from __future__ import annotations

import hmac
import time

import aiohttp
import pytest

from gateway import security
from gateway.security import mint_call_token, twilio_signature
from tests.support.audio import ulaw_tone
from tests.support.logcapture import capture_call_logs, events, wait_event

AUTH_TOKEN = "twilio-auth-token-under-test"
SECRET = b"test-secret"  # conftest: GATEWAY_TOKEN_SECRET


def _form(peer) -> dict[str, str]:
    return {"CallSid": peer.call_sid, "From": peer.from_, "To": peer.to, "AccountSid": "AC" + "0" * 32}


async def _refused_stream(peer, parameters: dict[str, str]) -> None:
    await peer.connect(parameters=parameters)
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    assert peer.close_code == 1008


def _assert_no_agent_session(fake_agent) -> None:
    assert fake_agent.connections == 0 and fake_agent.sessions == []


# ---- the webhook -------------------------------------------------------------------------------------------------
async def test_webhook_without_or_with_a_wrong_signature_is_refused(start_gateway, new_peer, http, fake_agent):
    gw = await start_gateway(TWILIO_AUTH_TOKEN=AUTH_TOKEN)
    peer = await new_peer(gw, dial=False)
    url = gw.base_url + "/twilio/voice"
    form = _form(peer)
    forged = twilio_signature("some-other-token", url, form)
    for headers in ({}, {"X-Twilio-Signature": forged}, {"X-Twilio-Signature": ""}):
        async with http.post(url, data=form, headers=headers) as r:
            assert r.status == 403, headers
            assert "Connect" not in await r.text()
    # the same request, signed with the right token over the URL Twilio requested, is answered
    await peer.dial(headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, form)})
    assert peer.parameters["token"].startswith("v2.")
    _assert_no_agent_session(fake_agent)


async def test_webhook_signature_over_other_params_is_refused(start_gateway, new_peer, http):
    gw = await start_gateway(TWILIO_AUTH_TOKEN=AUTH_TOKEN)
    peer = await new_peer(gw, dial=False)
    url = gw.base_url + "/twilio/voice"
    signed_for = _form(peer)
    tampered = dict(signed_for, To="+15559999999")  # a valid signature, replayed with another body
    async with http.post(
        url, data=tampered, headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, signed_for)}
    ) as r:
        assert r.status == 403


# ---- the upgrade ---------------------------------------------------------------------------------------------------
async def test_stream_upgrade_with_a_forged_signature_is_refused_before_any_agent_session(
    start_gateway, new_peer, http, fake_agent
):
    gw = await start_gateway(TWILIO_AUTH_TOKEN=AUTH_TOKEN)
    peer = await new_peer(gw, dial=False)
    url = gw.base_url + "/twilio/voice"
    await peer.dial(headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, _form(peer))})
    # signed with the wrong key, or over the https:// URL instead of the ws(s):// one Twilio signs (aspnet #162)
    for sig in (
        twilio_signature("wrong", peer.stream_url, {}),
        twilio_signature(AUTH_TOKEN, peer.stream_url.replace("ws://", "http://"), {}),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(peer.stream_url, headers={"X-Twilio-Signature": sig})
        assert exc.value.status == 403
    _assert_no_agent_session(fake_agent)
    # correctly signed: the call goes through
    peer.ws = await http.ws_connect(
        peer.stream_url, headers={"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, peer.stream_url, {})}
    )
    peer.run(play=True)
    await peer.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await peer.send_start()
    await fake_agent.session()


# ---- the per-call token --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "forged", "wrong_secret", "expired", "malformed", "truncated"],
)
async def test_stream_with_a_bad_token_is_refused_and_opens_no_agent_session(start_gateway, new_peer, fake_agent, case):
    gw = await start_gateway()
    peer = await new_peer(gw)
    good = peer.parameters["token"]
    now = time.time()
    token = {
        "missing": None,
        "empty": "",
        "forged": "v2.9999999999.n0nce." + "A" * 43,
        "wrong_secret": mint_call_token(b"not-the-secret", f"{peer.call_sid}|default", now, 300, scope="twilio"),
        "expired": mint_call_token(SECRET, f"{peer.call_sid}|default", now - 600, 300, scope="twilio"),
        "malformed": "v1." + good[3:],
        "truncated": good[:-4],
    }[case]
    params = {k: v for k, v in peer.parameters.items() if k != "token"}
    if token is not None:
        params["token"] = token
    with capture_call_logs() as logs:
        await _refused_stream(peer, params)
        await wait_event(logs, "call.ended")
    refused = events(logs, "call.refused")
    assert refused and refused[0]["call_sid"] == peer.call_sid and "call token" in refused[0]["reason"]
    assert events(logs, "call.ended")[0]["outcome"] == "refused"
    _assert_no_agent_session(fake_agent)


async def test_token_replayed_for_another_call_sid_is_refused(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    victim = await new_peer(gw)
    attacker = await new_peer(gw)  # a real webhook for another call, so only the token is wrong
    params = dict(attacker.parameters, token=victim.parameters["token"])
    with capture_call_logs() as logs:
        await _refused_stream(attacker, params)
        await wait_event(logs, "call.ended")
    assert "other call" in events(logs, "call.refused")[0]["reason"]
    _assert_no_agent_session(fake_agent)


async def test_a_token_opens_one_call_once_even_after_that_call_ended(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    first = await new_peer(gw)
    await first.connect()
    sess = await fake_agent.session()
    # A second stream for the same CallSid replays the token while the first call is live.
    replay = await new_peer(gw, dial=False, call_sid=first.call_sid)
    replay.stream_url, replay.parameters = first.stream_url, dict(first.parameters)
    with capture_call_logs() as logs:
        await _refused_stream(replay, replay.parameters)
        await wait_event(logs, "call.ended")
    assert events(logs, "call.refused")[0]["reason"] == "call token already used (a token opens one call, once)"
    assert fake_agent.connections == 1 and fake_agent.sessions == [sess]
    # the first call is untouched
    await first.send_media(ulaw_tone(440, 0.2))
    await first.wait_for(lambda: len(sess.audio) >= 0.2 * 48000 - 960)
    assert not first.closed.is_set()
    # After the call ended the token is still spent: replaying it within its TTL opens nothing.
    await first.stop()
    await first.wait_for(lambda: first.closed.is_set())
    again = await new_peer(gw, dial=False, call_sid=first.call_sid)
    again.stream_url, again.parameters = first.stream_url, dict(first.parameters)
    with capture_call_logs() as logs:
        await _refused_stream(again, again.parameters)
        await wait_event(logs, "call.ended")
    assert fake_agent.connections == 1
    # The same CallSid may attach again (re-attach after a redirect goes through the webhook): a fresh token works.
    fresh = await new_peer(gw, call_sid=first.call_sid)
    await fresh.connect()
    await fake_agent.session()
    assert fake_agent.connections == 2


async def test_call_token_is_compared_in_constant_time(monkeypatch):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    token = mint_call_token(SECRET, "CA1|default", 1000.0, 300, scope="twilio")
    security.verify_call_token(SECRET, token, "CA1|default", 1000.0, scope="twilio")
    with pytest.raises(security.TokenError):
        security.verify_call_token(
            SECRET, token[:-1] + ("A" if token[-1] != "A" else "B"), "CA1|default", 1000.0, scope="twilio"
        )
    assert len(seen) == 2  # both the match and the mismatch went through hmac.compare_digest
