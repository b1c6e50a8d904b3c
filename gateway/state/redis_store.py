"""The state store in Redis, for several replicas (docs/architecture/scale-out.md). Not pure: network I/O through
the ``redis`` package's asyncio client.

Keys (``p`` = ``state.key_prefix``):

- ``p tok:<sha256 of the token>``: a used stream token, ``SET NX PX`` (the token itself is never stored);
- ``p replicas``: the set of replica ids that ever registered (pruned when both keys below are gone);
- ``p replica:<id>``: the replica's record (JSON: internal address, draining), expires ``call_ttl_s`` after its last
  heartbeat;
- ``p calls:<id>``: its live calls (hash: CallSid → JSON), expires twice as late, so a dead replica's calls are
  known as *gone* (call control answers 410) for one more TTL before they are not known at all (404).

Every call is bounded by ``state.op_timeout_s`` and turns any failure into
:class:`~gateway.errors.StateUnavailable`. What must be atomic (admitting a call, finding its owner, freeing the
slots of ended calls no other replica serves) is a Lua script, one round trip each. Redis Cluster is not supported
(the scripts touch keys of several replicas); a single primary with a managed failover is
(docs/how-to/operations/scale-out.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import StateUnavailable
from .store import Admitted, LiveCall, Owner, Replica, StateStore

__all__ = ["RedisStore"]

T = TypeVar("T")

# KEYS: token, replicas set, my calls hash. ARGV: token ttl ms, call sid, call json, prefix, my id, calls ttl ms.
# The previous owner: another live replica holding the call, ranked as _OWNER ranks them.
_ADMIT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {0} end
local found, best_rank, best_at = {1}, -1, 0
for _, rid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if rid ~= ARGV[5] then
    local held = redis.call('HGET', ARGV[4] .. 'calls:' .. rid, ARGV[2])
    local rec = redis.call('GET', ARGV[4] .. 'replica:' .. rid)
    if held and rec then
      local c = cjson.decode(held)
      local rank = c.state == 'parked' and 0 or 1
      local at = tonumber(c.started_at) or 0
      if rank > best_rank or (rank == best_rank and at > best_at) then
        found, best_rank, best_at = {1, rec, held}, rank, at
      end
    end
  end
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[5])
return found
"""

# KEYS: replicas set. ARGV: prefix, call sid. Returns {record or '', call json} or {}. Several replicas may hold the
# call (after a redirect the old one keeps it parked until the hand-over, or its reattach window, ends): a live
# replica before a dead one, then where the call is live before where it is parked, then the newest stream.
_OWNER = """
local best, best_rank, best_at = nil, -1, 0
for _, rid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local held = redis.call('HGET', ARGV[1] .. 'calls:' .. rid, ARGV[2])
  local rec = redis.call('GET', ARGV[1] .. 'replica:' .. rid)
  if held then
    local c = cjson.decode(held)
    local rank = (rec and 2 or 0) + (c.state == 'parked' and 0 or 1)
    local at = tonumber(c.started_at) or 0
    if rank > best_rank or (rank == best_rank and at > best_at) then
      best, best_rank, best_at = {rec or '', held}, rank, at
    end
  elseif not rec and redis.call('EXISTS', ARGV[1] .. 'calls:' .. rid) == 0 then
    redis.call('SREM', KEYS[1], rid)
  end
end
return best or {}
"""


# KEYS: slots zset. ARGV: call sid, limit, ttl ms. Scores are expiry times on Redis's own clock (replicas' clocks
# may disagree).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: slots zset, replicas set. ARGV: prefix, call sids... A call some live replica holds live keeps its slot (it
# ended on one replica, a stale parked entry of it expired on another, but it goes on there); returns how many went.
_FREE = """
local holders = {}
for _, rid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. 'replica:' .. rid) == 1 then holders[#holders + 1] = ARGV[1] .. 'calls:' .. rid end
end
local freed = 0
for i = 2, #ARGV do
  local live = false
  for _, key in ipairs(holders) do
    local held = redis.call('HGET', key, ARGV[i])
    if held and cjson.decode(held).state ~= 'parked' then
      live = true
      break
    end
  end
  if not live then freed = freed + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return freed
"""

# KEYS: slots zset. ARGV: ttl ms, call sids...
_KEEP = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_, ARGV[i]) end
return #ARGV - 1
"""


def _replica_json(r: Replica) -> str:
    return json.dumps({"id": r.id, "address": r.address, "draining": r.draining, "started_at": r.started_at})


def _replica(text: str | bytes) -> Replica:
    d = json.loads(text)
    return Replica(str(d["id"]), str(d["address"]), bool(d.get("draining")), float(d.get("started_at", 0.0)))


def _call_json(c: LiveCall) -> str:
    return json.dumps(
        {
            "call_sid": c.call_sid,
            "stream_sid": c.stream_sid,
            "carrier": c.carrier,
            "profile": c.profile,
            "started_at": c.started_at,
            "state": c.state,
            "session_id": c.session_id,
        }
    )


def _call(text: str | bytes) -> LiveCall:
    d = json.loads(text)
    return LiveCall(
        str(d["call_sid"]),
        str(d["stream_sid"]),
        str(d["carrier"]),
        str(d["profile"]),
        float(d["started_at"]),
        str(d.get("state", "live")),
        str(d.get("session_id", "")),
    )


class RedisStore(StateStore):
    name = "redis"

    def __init__(self, url: str, *, prefix: str = "vg:", op_timeout_s: float = 0.25) -> None:
        self._prefix = prefix
        self._timeout = op_timeout_s
        # No retries inside the client: one bounded attempt, the caller falls back (docs: failure behaviour). A
        # blocking pool: a burst of call starts or ends waits (within the op timeout) for one of a few connections
        # rather than opening one each, or failing with "too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=16,
            timeout=op_timeout_s,
            socket_timeout=op_timeout_s,
            socket_connect_timeout=op_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._admit = self._redis.register_script(_ADMIT)
        self._owner = self._redis.register_script(_OWNER)
        self._reserve = self._redis.register_script(_RESERVE)
        self._keep = self._redis.register_script(_KEEP)
        self._free = self._redis.register_script(_FREE)

    def _k(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await op()
        except TimeoutError:
            raise StateUnavailable(f"redis: {what} took over {self._timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {what}: {exc}") from None

    async def admit_call(
        self, me: Replica, call: LiveCall, token_key: str, token_ttl_s: float, call_ttl_s: float
    ) -> Admitted:
        keys = [self._k("tok", token_key), self._k("replicas"), self._k("calls", me.id)]
        args: list[str | int] = [
            int(token_ttl_s * 1000),
            call.call_sid,
            _call_json(call),
            self._prefix,
            me.id,
            int(call_ttl_s * 2000),
        ]
        out: list[Any] = await self._run("admit", lambda: self._admit(keys=keys, args=args))
        if not out or int(out[0]) == 0:
            return Admitted(False)
        if len(out) == 3:
            return Admitted(True, Owner(_replica(out[1]), _call(out[2])))
        return Admitted(True)

    async def update_call(self, me: Replica, call: LiveCall) -> None:
        await self._run("update", lambda: self._redis.hset(self._k("calls", me.id), call.call_sid, _call_json(call)))

    async def drop_calls(self, me: Replica, call_sids: list[str]) -> None:
        if call_sids:
            await self._run("drop", lambda: self._redis.hdel(self._k("calls", me.id), *call_sids))

    async def heartbeat(self, me: Replica, calls: list[LiveCall], ttl_s: float) -> None:
        """One transaction: the record, the exact set of calls (so a failed drop or a Redis restart heals)."""
        ttl_ms, key = int(ttl_s * 1000), self._k("calls", me.id)

        async def beat() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._k("replica", me.id), _replica_json(me), px=ttl_ms)
                pipe.delete(key)
                if calls:
                    pipe.hset(key, mapping={c.call_sid: _call_json(c) for c in calls})
                    pipe.pexpire(key, 2 * ttl_ms)
                pipe.sadd(self._k("replicas"), me.id)
                await pipe.execute()

        await self._run("heartbeat", beat)

    async def owner_of(self, call_sid: str) -> Owner | None:
        out: list[Any] = await self._run(
            "owner", lambda: self._owner(keys=[self._k("replicas")], args=[self._prefix, call_sid])
        )
        if not out:
            return None
        return Owner(_replica(out[0]) if out[0] else None, _call(out[1]))

    async def live_calls(self) -> list[tuple[Replica, LiveCall]]:
        async def read() -> list[tuple[Replica, LiveCall]]:
            ids = sorted(str(i) for i in await self._redis.smembers(self._k("replicas")))
            async with self._redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.get(self._k("replica", rid))
                    pipe.hgetall(self._k("calls", rid))
                got = await pipe.execute()
            out: list[tuple[Replica, LiveCall]] = []
            for i in range(len(ids)):
                rec, calls = got[2 * i], got[2 * i + 1]
                if rec:
                    replica = _replica(rec)
                    out.extend((replica, _call(v)) for v in calls.values())
            return out

        return await self._run("live_calls", read)

    async def reserve_slot(self, call_sid: str, limit: int, ttl_s: float) -> bool:
        args: list[str | int] = [call_sid, limit, int(ttl_s * 1000)]
        out = await self._run("reserve", lambda: self._reserve(keys=[self._k("slots")], args=args))
        return bool(int(out))

    async def keep_slots(self, call_sids: list[str], ttl_s: float) -> None:
        if call_sids:
            args: list[str | int] = [int(ttl_s * 1000), *call_sids]
            await self._run("keep_slots", lambda: self._keep(keys=[self._k("slots")], args=args))

    async def free_slots(self, call_sids: list[str]) -> None:
        if call_sids:
            keys, args = [self._k("slots"), self._k("replicas")], [self._prefix, *call_sids]
            await self._run("free_slots", lambda: self._free(keys=keys, args=args))

    async def leave(self, me: Replica) -> None:
        async def go() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._k("replica", me.id), self._k("calls", me.id))
                pipe.srem(self._k("replicas"), me.id)
                await pipe.execute()

        await self._run("leave", go)

    async def ping(self) -> None:
        await self._run("ping", self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()  # a pool passed in is not closed by the client
