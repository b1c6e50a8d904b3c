"""1,000 short calls in sequence against the fake agent, a third of them hung up by the caller in the middle of the
agent's reply: afterwards no call task, no agent session or socket, no CallSession or resampler object, an empty
registry, and memory flat (docs/architecture/failure-behaviour.md#no-leaks; vocode #741, pipecat #3750)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time

from gateway.audio.resample import StreamResampler
from gateway.call.core import CallCore
from gateway.config import REPO_CONFIG_DIR
from gateway.keys import CALLS
from gateway.session import CallSession
from tests.conftest import call_tasks
from tests.support.audio import tone, ulaw_tone
from tests.support.gc_cycles import alive
from tests.support.logcapture import capture_call_logs
from tests.support.short_call import short_call

N_CALLS = 1000
#: RSS settles over the first few hundred calls (allocator arenas, aiohttp/websockets caches): a 4,000-call run
#: measured 68.9 MB at call 0, 71.0 at 500, 71.4 at 1,000 and 72.0 at 3,500. So measure calls WARMUP..N_CALLS.
WARMUP = 400
#: Bounds over those 600 calls. A leaked call (its session, queues and resamplers: well over 50 KiB) breaks the RSS
#: bound (3 MB / 600 = 5 KiB per call); a leaked dict or list per call breaks the block bound (~4 blocks per call).
RSS_BOUND_MB = 3.0
BLOCKS_BOUND = 2500  # CPython allocated memory blocks (sys.getallocatedblocks); noise is about ±300


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_1000_short_calls_leave_nothing_behind_and_memory_stays_flat(start_gateway, fake_agent, http, tmp_path):
    # Single-use stream tokens are remembered until they expire (docs/security.md), by admission and by the state
    # store: with the default 300 s every call of this 30 s run would still be remembered at the end, growth that
    # stops at the TTL, not a leak. A 3 s TTL reaches that plateau within the warm-up, so what is measured after it
    # is what a call leaves behind for good.
    config = tmp_path / "gateway.toml"
    config.write_text(
        (REPO_CONFIG_DIR / "gateway.toml")
        .read_text(encoding="utf-8")
        .replace("call_token_ttl_s = 300.0", "call_token_ttl_s = 3.0", 1)
    )
    gw = await start_gateway(str(config))
    calls = gw.app[CALLS]
    calls.keep_summaries = 20  # the registry keeps the last N summaries by design (default 1000): not a leak
    caller_audio = ulaw_tone(440, 0.1)
    reply_pcm = tone(500, 1.0, 24000)
    outcomes: dict[str, int] = {}
    rss0 = blocks0 = 0.0
    t0 = time.monotonic()

    async def one(i: int) -> None:
        # a third of the calls: the agent answers with 1 s of speech; the caller hangs up as soon as it hears it
        sess = await short_call(gw, fake_agent, http, caller_audio, reply_pcm if i % 3 == 0 else None)
        assert sess.ended_by_client
        fake_agent.sessions.remove(sess)  # the fake's own records, not the gateway's

    # pytest keeps every stdlib log record of a test in memory (its report capture), and aiohttp's test servers
    # write an access-log record per request: that would be the test harness growing, not the gateway.
    access = logging.getLogger("aiohttp.access")
    access_was_disabled, access.disabled = access.disabled, True
    try:
        with capture_call_logs() as logs:
            for i in range(N_CALLS):
                if i == WARMUP:
                    gc.collect()
                    rss0, blocks0 = _rss_mb(), sys.getallocatedblocks()
                await one(i)
                for e in logs:
                    if e["event"] == "call.ended":
                        outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
                logs.clear()
            await asyncio.sleep(0.05)
    finally:
        access.disabled = access_was_disabled
    elapsed = time.monotonic() - t0
    gc.collect()
    rss1, blocks1 = _rss_mb(), sys.getallocatedblocks()
    assert outcomes == {"caller_hangup": N_CALLS}
    assert call_tasks() == []
    assert len(calls) == 0 and calls.admission.idle
    assert fake_agent.live_sessions == [] and not fake_agent.open_sockets and fake_agent.connections == N_CALLS
    assert alive(CallSession) == 0 and alive(CallCore) == 0 and alive(StreamResampler) == 0
    per_call_kib = (rss1 - rss0) * 1024 / (N_CALLS - WARMUP)
    print(
        f"\n[soak] {N_CALLS} calls in {elapsed:.1f} s; over calls {WARMUP}..{N_CALLS}: RSS {rss0:.1f} -> {rss1:.1f} MB "
        f"({per_call_kib:+.2f} KiB/call), allocated blocks {blocks0:.0f} -> {blocks1:.0f} ({blocks1 - blocks0:+.0f})"
    )
    assert rss1 - rss0 <= RSS_BOUND_MB
    assert blocks1 - blocks0 <= BLOCKS_BOUND
