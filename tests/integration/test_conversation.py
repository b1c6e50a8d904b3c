"""Conversation features over loopback (docs/how-to/conversation.md): Twilio peer ⇄ real gateway ⇄ the
spec-following fake agent. A stored agent is named alone in the first ``session.update`` and the profile's fields
follow once it is ready."""

from __future__ import annotations

from typing import Any

from tests.support.logcapture import capture_call_logs, events
from tests.unit.test_log_schema import check_event


async def start(start_gateway: Any, tmp_path: Any, profile: str) -> Any:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[profiles.default]\ngreeting = ""\n{profile}\n', encoding="utf-8")
    return await start_gateway(str(cfg))


async def test_a_stored_agent_is_named_alone_then_the_profile_follows_once_ready(
    start_gateway, new_peer, fake_agent, tmp_path
):
    gw = await start(
        start_gateway,
        tmp_path,
        'agent_id = "agent_0123456789abcdef0123456789abcdef"\nkeyterms = ["Harbour Kitchen"]\n'
        'tools = ["end_call"]\n[profiles.default.turn_detection]\nmin_silence = 700',
    )
    with capture_call_logs() as logs:
        peer = await new_peer(gw)
        await peer.connect()
        sess = await fake_agent.session()
        follow = await sess.next_message("session.update")  # the first one, then the one on top
        if "agent_id" in follow["session"]:
            follow = await sess.next_message("session.update")
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set())
    first = sess.received[0]
    assert first == {"type": "session.update", "session": {"agent_id": "agent_0123456789abcdef0123456789abcdef"}}
    on_top = follow["session"]
    assert on_top["input"]["keyterms"] == ["Harbour Kitchen"]
    assert on_top["input"]["turn_detection"] == {"min_silence": 700}
    assert [t["name"] for t in on_top["tools"]] == ["end_call"]
    assert "greeting" not in on_top and "voice" not in on_top.get("output", {})  # immutable: the agent's own
    assert events(logs, "agent.session_ready")
    for line in logs:
        check_event(line)
