"""The browser softphone (issue #4): talk to the agent from a web page, over the very same Twilio Media Streams
protocol a phone call uses, at a stream door of its own. Not pure: aiohttp handlers.

When it is served (:func:`softphone_enabled`): ``[softphone] enabled = "auto"`` (the default) only in development,
that is with the embedded local agent *and* no public URL; ``"on"`` always, and then, with a public URL, every
route needs the operator key GATEWAY_API_KEY (HTTP Basic password or Bearer; config refuses ``on`` + public URL
without it). Who may use it, and how refusals are logged and counted: :mod:`gateway.softphone.access`.

Routes, added by :func:`setup`:

- ``GET  /softphone``                      the page (static/index.html; softphone.js and worklet.js beside it)
- ``POST /softphone/dial``                 places a call (``application/json`` only, same origin only): reserves
  a slot in the gateway's admission (503 when none is free or the process drains), mints a call token for the
  ``softphone`` door bound to the new CallSid and the called number's profile, and returns
  ``{"call_sid", "account_sid", "twiml"}``, the TwiML a voice webhook would answer; the page reads ``<Stream url>``
  and its ``<Parameter>``s from it and opens the stream itself, playing Twilio's part (connected, start, media,
  mark echoes, stop)
- ``GET  /softphone/stream``               that stream: Twilio's dialect, but tokens from ``/twilio/voice`` are
  refused here and ours at ``/twilio/stream`` (gateway.security scopes), and no Twilio signature is asked for
  (a browser cannot sign; the credential and the token are what let it in)
- ``GET  /softphone/events?call_sid=…``    server-sent events of that call's timeline (``CallRegistry.listeners``:
  call.started, agent.reply_started, agent.first_audio, caller.transcript, agent.transcript, call.barge_in,
  call.ended…), one ``data: {"kind": …, …}`` line per event. Only calls dialled here can be watched.

Lifetimes: a dialled call can be watched until its stream would have had to start (:data:`START_WINDOW_S`, at most
the admission's reservation TTL); once it started, for its own ``server.max_call_s`` (plus :data:`ENDING_GRACE_S`
for its teardown); once it ended, no longer. A feed ends at that bound too, so a call that never streams cannot
hold one of the :data:`MAX_SUBSCRIBERS` feeds for long.

Backpressure: each event-feed subscriber has a queue of :data:`FEED_QUEUE` events; when it is full (the browser is
not reading) newer events are dropped and counted, and the next delivered event carries ``"dropped": n``. At most
:data:`MAX_SUBSCRIBERS` feeds are open at once (503 beyond). A feed ends with its call (``call.ended``), when the
browser goes away (the keepalive write fails), at its lifetime bound, or at shutdown; its listener is removed on
every path. No tasks are created: each feed is its own request handler.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from .. import urls
from ..call.events import CallEvent
from ..carriers.twilio import TwilioDialect
from ..carriers.twiml import connect_stream
from ..config import Settings
from ..errors import ConfigError
from ..keys import CALLS, RECORDS, SETTINGS, SOFTPHONE
from ..media_stream import serve_stream
from ..outbound import token_subject
from ..security import mint_call_token
from .access import Handler, guard, refuse

__all__ = [
    "ENDING_GRACE_S",
    "FEED_QUEUE",
    "MAX_SUBSCRIBERS",
    "SCOPE",
    "START_WINDOW_S",
    "STREAM_PATH",
    "SoftphoneState",
    "setup",
    "softphone_enabled",
]

log = structlog.get_logger("gateway.softphone")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ASSETS = {"softphone.js": "text/javascript", "worklet.js": "text/javascript"}
#: The stream door's name: tokens minted by the dial endpoint are valid only there (gateway.security).
SCOPE = "softphone"
STREAM_PATH = "/softphone/stream"
#: Who the softphone's calls come from, as the call's ``from`` parameter and its logs show it.
CALLER = "client:softphone"
#: Events buffered per feed subscriber before newer ones are dropped (a call emits a few per turn).
FEED_QUEUE = 256
MAX_SUBSCRIBERS = 32
#: Seconds between SSE keepalive comments; also how soon a vanished browser is noticed.
KEEPALIVE_S = 10.0
#: Seconds a dialled call's stream has to start (the page opens it within a second). Past this (or the admission's
#: reservation TTL, if shorter: the slot is gone then) the call is forgotten and its feeds end.
START_WINDOW_S = 30.0
#: Seconds past ``server.max_call_s`` a started call stays watchable: its teardown still has to emit call.ended.
ENDING_GRACE_S = 15.0
_TO = re.compile(r"\+?[A-Za-z0-9:_.\-]{0,40}")


@dataclass(eq=False)  # compared and hashed by identity
class _Feed:
    call_sid: str
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=FEED_QUEUE)
    )
    dropped: int = 0

    def offer(self, call_sid: str, event: CallEvent) -> None:
        """The registry listener: called synchronously from the call session; never blocks."""
        if call_sid != self.call_sid:
            return
        try:
            self.queue.put_nowait((event.kind, event.fields()))
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        while True:  # make room for the end-of-feed marker
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


@dataclass(eq=False)
class _Dialled:
    """A call dialled here. ``until`` (monotonic) bounds both when a feed may be opened and how long one lasts; feeds
    hold this object and re-read it, so a call that starts extends the feeds already open."""

    until: float
    started: bool = False


@dataclass
class SoftphoneState:
    #: server.max_call_s: how long a started call may be watched
    max_call_s: float = 3600.0
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    dialled: dict[str, _Dialled] = field(default_factory=dict)
    feeds: set[_Feed] = field(default_factory=set)

    def prune(self, now: float) -> None:
        for sid in [s for s, d in self.dialled.items() if d.until < now]:
            del self.dialled[sid]

    def on_call_event(self, call_sid: str, event: CallEvent) -> None:
        """The registry listener that moves a dialled call's bound: from the start window to the call's own maximum
        when its stream starts, to now when it ends (its feeds have their call.ended, a later feed has nothing to
        show). Called synchronously from call sessions: a dict lookup, never raises."""
        entry = self.dialled.get(call_sid)
        if entry is None:
            return
        now = time.monotonic()
        kind = event.kind
        if kind == "call.started" and not entry.started and entry.until >= now:
            entry.started = True
            entry.until = now + self.max_call_s + ENDING_GRACE_S
        elif kind == "call.ended":
            entry.until = now
            del self.dialled[call_sid]


def softphone_enabled(settings: Settings) -> bool:
    """``on``: served; ``auto``: served only in development (the embedded local agent and no public URL: a gateway
    that carriers can reach is not a development box, whatever agent it uses); ``off``: never."""
    mode = settings.softphone.enabled
    return mode == "on" or (mode == "auto" and settings.use_local_agent and not settings.server.public_url)


def setup(app: web.Application) -> bool:
    """Add the softphone's routes and state to the gateway app if its settings (``app[SETTINGS]``) enable it;
    returns whether it did."""
    settings = app[SETTINGS]
    if not softphone_enabled(settings):
        return False
    public_url = settings.server.public_url
    key: str | None = None
    if public_url:
        key = settings.secrets.gateway_api_key
        if not key:  # config._check refuses this already; settings built by hand must not slip past either
            raise ConfigError('softphone.enabled: "on" with a public URL needs GATEWAY_API_KEY')
    state = app[SOFTPHONE] = SoftphoneState(max_call_s=settings.server.max_call_s)
    app[CALLS].listeners.append(state.on_call_event)

    def route(handler: Handler, same_origin: bool) -> Handler:
        return guard(handler, key=key, public_url=public_url, same_origin=same_origin)

    # The page and its scripts may be reached from anywhere (a link, a bookmark); the routes that act may not.
    app.router.add_get("/softphone", route(_page, same_origin=False))
    app.router.add_get("/softphone/{name:softphone\\.js|worklet\\.js}", route(_asset, same_origin=False))
    app.router.add_post("/softphone/dial", route(_dial, same_origin=True))
    app.router.add_get(STREAM_PATH, route(_stream, same_origin=True))
    app.router.add_get("/softphone/events", route(_events, same_origin=True))
    app.on_shutdown.append(_close_feeds)
    log.info("softphone.enabled", mode=settings.softphone.enabled, path="/softphone")
    return True


# ---- page --------------------------------------------------------------------------------------------------------
_NO_STORE = {"Cache-Control": "no-store"}


async def _page(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC_DIR / "index.html").read_bytes(), content_type="text/html", charset="utf-8", headers=_NO_STORE
    )


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.Response(
        body=(STATIC_DIR / name).read_bytes(), content_type=_ASSETS[name], charset="utf-8", headers=_NO_STORE
    )


# ---- dial --------------------------------------------------------------------------------------------------------
async def _dial(request: web.Request) -> web.StreamResponse:
    settings: Settings = request.app[SETTINGS]
    state = request.app[SOFTPHONE]
    calls = request.app[CALLS]
    # Only JSON: a form or text/plain POST is what another site can send cross-origin without a CORS preflight.
    if request.content_type != "application/json":
        return refuse(request, 415, "unsupported_media_type", "expected Content-Type: application/json")
    to = ""
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='expected a JSON body like {"to": "+15550100002"}') from None
        to = str(body.get("to", "")) if isinstance(body, dict) else ""
    if not _TO.fullmatch(to):
        raise web.HTTPBadRequest(text="'to' must be a phone number or client name")
    call_sid = "CA" + secrets.token_hex(16)  # shaped like Twilio's: the page plays Twilio's side
    now = time.monotonic()
    # The slot is held from here, as the voice webhook holds it for Twilio's calls (gateway.admission): a burst of
    # dials cannot race past the call limit, and a dial whose stream never comes frees it after the reservation TTL.
    refusal = calls.admission.reserve(call_sid, now)
    if refusal is not None:
        return refuse(request, 503, refusal, "not accepting calls")
    profile, served = settings.profile_for(to)
    # Recorded: the page links the recording after hang-up (the call records API, with the operator key).
    recording = f"/calls/{call_sid}/recording" if served.record and RECORDS in request.app else None
    token = mint_call_token(
        settings.secrets.token_secret,
        token_subject({}, call_sid, profile),
        time.time(),
        settings.server.call_token_ttl_s,
        scope=SCOPE,
    )
    # No status callback: no carrier is involved, nobody would post it.
    # Where the page opens its stream: as for Twilio's door, the public URL or our own listener, never an address
    # taken from request headers (gateway.urls).
    stream_url = urls.stream_url(
        settings.server.public_url, STREAM_PATH, urls.sockname(request.transport), settings.server.port
    )
    twiml = connect_stream(stream_url, {"token": token, "from": CALLER, "to": to})
    state.prune(now)
    state.dialled[call_sid] = _Dialled(until=now + min(START_WINDOW_S, calls.admission.reservation_ttl_s))
    log.info("softphone.dialled", call_sid=call_sid)
    return web.json_response(
        {"call_sid": call_sid, "account_sid": state.account_sid, "twiml": twiml, "recording": recording},
        headers=_NO_STORE,
    )


# ---- stream ------------------------------------------------------------------------------------------------------
async def _stream(request: web.Request) -> web.StreamResponse:
    """The page's media stream: Twilio's dialect at the softphone's own door, so only tokens from /softphone/dial
    open it, and Twilio's door can require Twilio's upgrade signature without locking the browser out."""
    return await serve_stream(request, TwilioDialect(), scope=SCOPE)


# ---- event feed --------------------------------------------------------------------------------------------------
async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[SOFTPHONE]
    call_sid = request.query.get("call_sid", "")
    state.prune(time.monotonic())
    entry = state.dialled.get(call_sid)
    if entry is None:
        raise web.HTTPNotFound(text="no call with that call_sid was dialled from the softphone (or it is over)")
    if len(state.feeds) >= MAX_SUBSCRIBERS:
        return refuse(request, 503, "too_many_feeds", "too many open event feeds")
    calls = request.app[CALLS]
    feed = _Feed(call_sid)
    listener = feed.offer
    calls.listeners.append(listener)
    state.feeds.add(feed)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    seq = 0
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: feed open\n\n")
        while True:
            if feed.queue.empty():
                # The bound is re-read on every wait: it moves when the call starts (gateway.softphone docstring).
                # Checked only with nothing queued, so a call.ended that arrived with the bound is still delivered.
                remaining = entry.until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation racing the get.
                    async with asyncio.timeout(min(KEEPALIVE_S, remaining)):
                        item = await feed.queue.get()
                except TimeoutError:
                    if entry.until > time.monotonic():
                        await resp.write(b": keepalive\n\n")  # fails once the browser is gone
                    continue
            else:
                item = feed.queue.get_nowait()
            if item is None:
                break  # shutdown
            kind, fields = item
            seq += 1
            payload: dict[str, Any] = {"kind": kind, **fields}
            if feed.dropped:
                payload["dropped"] = feed.dropped
            data = json.dumps(payload, default=str, separators=(",", ":"))
            await resp.write(f"id: {seq}\ndata: {data}\n\n".encode())
            if kind == "call.ended":
                break
    except ConnectionError:
        pass  # the browser went away: nothing to tell it
    finally:
        if listener in calls.listeners:
            calls.listeners.remove(listener)
        state.feeds.discard(feed)
    return resp


async def _close_feeds(app: web.Application) -> None:
    """on_shutdown: end every open feed so its handler returns before the server stops."""
    for feed in list(app[SOFTPHONE].feeds):
        feed.close()
