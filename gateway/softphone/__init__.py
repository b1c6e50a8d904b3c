"""The browser softphone (issue #4): talk to the agent from a web page, over the very same Twilio Media Streams
protocol a phone call uses. Not pure: aiohttp handlers.

Routes, added by :func:`setup_softphone` when ``[softphone] enabled`` allows it (``auto``: only with the embedded
local agent, because the dial endpoint hands out call tokens: whoever reaches it can open agent sessions on your
key):

- ``GET  /softphone``                      the page (static/index.html; softphone.js and worklet.js beside it)
- ``POST /softphone/dial``                 places a call: the gateway's own voice webhook answers it, over loopback,
  exactly as it answers Twilio (signed when TWILIO_AUTH_TOKEN is set), and the TwiML comes back to the page as
  ``{"call_sid", "account_sid", "twiml"}``; the page reads ``<Stream url>`` and its ``<Parameter>``s from it and
  opens ``/twilio/stream`` itself, playing Twilio's part (connected, start, media, mark echoes, stop)
- ``GET  /softphone/events?call_sid=…``    server-sent events of that call's timeline (``CallRegistry.listeners``:
  call.started, agent.reply_started, agent.first_audio, caller.transcript, agent.transcript, call.barge_in,
  call.ended…), one ``data: {"kind": …, …}`` line per event. Only calls dialled here can be watched.

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

from ..call.events import CallEvent
from ..config import Settings
from ..security import twilio_signature

__all__ = ["FEED_QUEUE", "MAX_SUBSCRIBERS", "SOFTPHONE", "SoftphoneState", "setup_softphone", "softphone_enabled"]

log = structlog.get_logger("gateway.softphone")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_ASSETS = {"softphone.js": "text/javascript", "worklet.js": "text/javascript"}
#: Events buffered per feed subscriber before newer ones are dropped (a call emits a few per turn).
FEED_QUEUE = 256
MAX_SUBSCRIBERS = 32
#: Seconds between SSE keepalive comments; also how soon a vanished browser is noticed.
KEEPALIVE_S = 10.0
#: Calls dialled here stay watchable this long after dialling (plus the call's own maximum).
DIALLED_KEEP_S = 120.0
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


@dataclass
class SoftphoneState:
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    #: call_sid -> monotonic time until which its feed may be opened
    dialled: dict[str, float] = field(default_factory=dict)
    feeds: set[_Feed] = field(default_factory=set)

    def prune(self, now: float) -> None:
        for sid in [s for s, until in self.dialled.items() if until < now]:
            del self.dialled[sid]

SOFTPHONE = web.AppKey("softphone", SoftphoneState)


def softphone_enabled(settings: Settings) -> bool:
    mode = settings.softphone.enabled
    return mode == "on" or (mode == "auto" and settings.use_local_agent)


def setup_softphone(app: web.Application, settings: Settings) -> bool:
    """Add the softphone's routes to the gateway app if the settings enable it; returns whether it did."""
    if not softphone_enabled(settings):
        return False
    app[SOFTPHONE] = SoftphoneState()
    app.router.add_get("/softphone", _page)
    app.router.add_get("/softphone/{name:softphone\\.js|worklet\\.js}", _asset)
    app.router.add_post("/softphone/dial", _dial)
    app.router.add_get("/softphone/events", _events)
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
def _loopback_base(request: web.Request) -> str:
    """http://host:port of the listener this request came in on (0.0.0.0/:: mapped to loopback)."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        raise web.HTTPServiceUnavailable(text="softphone: cannot tell which address the gateway listens on")
    host = str(sock[0])
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(sock[1])}"


async def _dial(request: web.Request) -> web.Response:
    from ..app import HTTP, SETTINGS  # the app module imports us lazily; import back the same way
    from ..simulator.twilio_side import new_sid, webhook_form

    settings: Settings = request.app[SETTINGS]
    state = request.app[SOFTPHONE]
    to = ""
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON body like {\"to\": \"+15550100002\"}") from None
        to = str(body.get("to", "")) if isinstance(body, dict) else ""
    if not _TO.fullmatch(to):
        raise web.HTTPBadRequest(text="'to' must be a phone number or client name")
    call_sid = new_sid("CA")
    form = webhook_form(call_sid, state.account_sid, "client:softphone", to)
    base = _loopback_base(request)
    headers = {"User-Agent": "voice-gateway softphone"}
    auth = settings.secrets.twilio_auth_token
    if auth:
        # Answered by the real webhook, which checks signatures when a token is configured: sign as Twilio would,
        # over the URL the webhook checks against (the configured public URL, else the Host we connect to).
        signed_url = (settings.server.public_url or base).rstrip("/") + "/twilio/voice"
        headers["X-Twilio-Signature"] = twilio_signature(auth, signed_url, form)
    try:
        async with asyncio.timeout(10):
            async with request.app[HTTP].post(base + "/twilio/voice", data=form, headers=headers) as resp:
                twiml = await resp.text()
                status = resp.status
    except (TimeoutError, OSError) as exc:
        log.warning("softphone.dial_failed", error=str(exc) or type(exc).__name__)
        raise web.HTTPBadGateway(text="the voice webhook did not answer") from None
    if status != 200:
        log.warning("softphone.dial_refused", status=status)
        raise web.HTTPBadGateway(text=f"the voice webhook answered HTTP {status}")
    now = time.monotonic()
    state.prune(now)
    state.dialled[call_sid] = now + DIALLED_KEEP_S + settings.server.max_call_s
    log.info("softphone.dialled", call_sid=call_sid)
    return web.json_response(
        {"call_sid": call_sid, "account_sid": state.account_sid, "twiml": twiml}, headers=_NO_STORE
    )


# ---- event feed --------------------------------------------------------------------------------------------------
async def _events(request: web.Request) -> web.StreamResponse:
    from ..app import CALLS, SETTINGS

    state = request.app[SOFTPHONE]
    settings: Settings = request.app[SETTINGS]
    call_sid = request.query.get("call_sid", "")
    now = time.monotonic()
    state.prune(now)
    if call_sid not in state.dialled:
        raise web.HTTPNotFound(text="no call with that call_sid was dialled from the softphone")
    if len(state.feeds) >= MAX_SUBSCRIBERS:
        raise web.HTTPServiceUnavailable(text="too many open event feeds")
    calls = request.app[CALLS]
    feed = _Feed(call_sid)
    listener = feed.offer
    calls.listeners.append(listener)
    state.feeds.add(feed)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.server.max_call_s + DIALLED_KEEP_S
    seq = 0
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: feed open\n\n")
        while loop.time() < deadline:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races the get.
                async with asyncio.timeout(KEEPALIVE_S):
                    item = await feed.queue.get()
            except TimeoutError:
                await resp.write(b": keepalive\n\n")  # fails once the browser is gone
                continue
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
