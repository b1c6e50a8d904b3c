"""The drain (gateway.drain) with stand-in sessions: which calls are asked to end, and when."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

import gateway.drain as drain_mod
from gateway.call_registry import CallRegistry
from gateway.keys import CALLS


class _Session:
    """Stands in for a CallSession: ``request_end`` ends it ``ends_after`` s later (its goodbye)."""

    def __init__(self, calls: CallRegistry, key: int, ends_after: float) -> None:
        self.calls, self.key, self.ends_after = calls, key, ends_after
        self.end_reasons: list[str] = []

    def request_end(self, reason: str = "drained") -> None:
        if self.end_reasons:
            return  # idempotent, as the real one
        self.end_reasons.append(reason)
        asyncio.get_running_loop().call_later(self.ends_after, lambda: self.calls.active.pop(self.key, None))


async def test_a_call_that_starts_while_the_drain_ends_calls_hears_the_goodbye_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call whose webhook was answered before the drain may start after the drain's deadline (admission keeps that
    promise); it was never asked to end, so the drain waited its whole hang-up allowance for it and left it to the
    runner's hard close, with no goodbye."""
    monkeypatch.setattr(drain_mod, "hangup_allowance_s", lambda app: 1.0)
    app = web.Application()
    calls = CallRegistry()
    app[CALLS] = calls
    early = _Session(calls, 1, ends_after=0.3)
    calls.active[1] = (early, None)  # type: ignore[assignment]
    late = _Session(calls, 2, ends_after=0.05)

    async def late_stream_starts() -> None:
        await asyncio.sleep(0.1)
        calls.active[2] = (late, None)  # type: ignore[assignment]

    arrival = asyncio.create_task(late_stream_starts())
    await drain_mod.drain(app, budget_s=0.0)
    await arrival
    assert early.end_reasons == ["drained"]
    assert late.end_reasons == ["drained"], "the call that started during the drain never heard the goodbye"
    assert not calls.active
