"""Reading request bodies that anyone on the internet can send: a body we cannot decode is the sender's fault and
gets a 400 with a short reason, never a 500 with a traceback (docs/security.md, "Malformed input").

- :func:`read_form`: an ``application/x-www-form-urlencoded`` (or multipart) body as the carriers' webhooks send
  it, every value of every name kept (signatures are computed over all of them). File uploads are refused: no
  webhook sends one, and a file field has no string value to sign or read.
- :func:`read_json`: a JSON body of at most :data:`MAX_JSON_DEPTH` levels of nesting (Python's decoder recurses,
  so a deeply nested body would otherwise raise ``RecursionError`` deep inside it).

Both also answer 400 for what can go wrong before decoding: a ``Content-Encoding`` the body does not match, an
unknown ``charset``, a chunked body cut short or a peer gone mid-body (:class:`aiohttp.web.RequestPayloadError`,
``LookupError``, ``ConnectionResetError``; the last 400 reaches nobody, but nothing is logged as a server error).

Before any body there is the request head, and aiohttp gives a connection as long as it likes to send one (its
``keepalive_timeout``, an hour by default, and only in recent releases for a connection's first request): a few
hundred connections trickling their headers would hold the server's connections forever (slowloris).
:class:`RequestHeadDeadline` closes a connection that has not completed a request head ``server.header_timeout_s``
after it opened or after its previous response. It is installed where the server is built
(:func:`gateway.drain.listening`), which also hands aiohttp :data:`SERVER_LOG`: a request head aiohttp cannot
parse is answered 400 by aiohttp itself, which would also log the parser's traceback at ERROR for every such
request anyone sends; that logger drops those and keeps the tracebacks of our own handlers' errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["MAX_JSON_DEPTH", "SERVER_LOG", "RequestHeadDeadline", "json_depth_ok", "read_form", "read_json"]

#: Deeper JSON than this is refused before it is decoded. Our bodies are two levels deep; 32 leaves room.
MAX_JSON_DEPTH = 32
#: Reading the body itself failed: the sender's fault (or the sender is gone), never ours.
_UNREADABLE = (web.RequestPayloadError, LookupError, ConnectionResetError)


async def read_form(request: web.Request) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The form body as ``(every value of each name, the first value of each name)``. Raises
    :class:`aiohttp.web.HTTPBadRequest` for a body that is not valid form data (invalid UTF-8 included)."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError, *_UNREADABLE) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid form data ({type(exc).__name__})") from None
    files = [v for v in form.values() if isinstance(v, web.FileField)]
    if files:
        for f in files:
            f.file.close()  # aiohttp spooled it to a temporary file; do not leave that to the collector
        raise web.HTTPBadRequest(text="body is not valid form data (file upload)")
    multi = {k: [str(v) for v in form.getall(k)] for k in set(form.keys())}
    return multi, {k: v[0] for k, v in multi.items()}


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no bracket in ``text`` nests deeper than ``limit`` (brackets inside strings not counted)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


async def read_json(request: web.Request) -> Any:
    """The JSON body, decoded. Raises :class:`aiohttp.web.HTTPBadRequest` for invalid UTF-8, invalid JSON or JSON
    nested deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        raw = await request.read()
    except _UNREADABLE as exc:
        raise web.HTTPBadRequest(text=f"body could not be read ({type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="body is not valid UTF-8") from None
    if not json_depth_ok(text):
        raise web.HTTPBadRequest(text=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="body is not valid JSON") from None


# ---- request heads -------------------------------------------------------------------------------------------------
def _not_a_peer_error(record: logging.LogRecord) -> bool:
    """False for aiohttp's "Error handling request" about a head it could not parse (the peer's fault: it already
    answered 400); True for everything else, an unhandled error in one of our handlers (a 500) included."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, HttpProcessingError)


#: The logger to give aiohttp's server (``web.AppRunner(..., logger=SERVER_LOG)``), in place of ``aiohttp.server``.
SERVER_LOG = logging.getLogger("gateway.http")
SERVER_LOG.addFilter(_not_a_peer_error)


@dataclass
class _Connection:
    timer: asyncio.TimerHandle | None = None  # None while a request is being handled
    served: bool = False  # it completed a request head at least once


class RequestHeadDeadline:
    """Closes a connection that does not complete a request head (request line + headers) within ``timeout_s`` of
    opening, or of the end of its previous request on a keep-alive connection.

    A connection is on the clock only while it waits for a head: from the moment a head is complete (the request
    reaches the app) until the handler returns, nothing is timed, so upgraded WebSockets and streamed responses
    (SSE) live as long as their handler. A plain response is handed to the transport whole once its handler
    returns, and closing a transport flushes what it holds, so a slow reader still gets all of it. Keep-alive
    connections left idle are closed after ``timeout_s`` too, as uvicorn's ``timeout_keep_alive`` does (a proxy in
    front should not keep idle upstream connections longer, or it may reuse one just as it is closed).

    ``on_expired`` is called for each connection closed before it completed any request head (idle keep-alive
    connections are normal, not counted). The closing itself is aiohttp's own idle close
    (:meth:`aiohttp.web.RequestHandler.force_close`), silent like its keep-alive timeout.
    """

    def __init__(self, timeout_s: float, on_expired: Callable[[], None] | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self._on_expired = on_expired
        self._connections: dict[web.RequestHandler, _Connection] = {}

    def install(self, server: web.Server) -> None:
        """Hook into ``server`` (``runner.server`` after ``AppRunner.setup()``, before any site starts). aiohttp
        builds the :class:`~aiohttp.web.Server` inside the runner and has no hook for connection events, so its three
        entry points are wrapped on this one instance: ``connection_made`` / ``connection_lost`` (every
        :class:`~aiohttp.web.RequestHandler` calls them) and ``request_handler`` (called once a head is complete;
        each connection's handler reads it when the connection is made, hence "before any site starts")."""
        made, lost, handle = server.connection_made, server.connection_lost, server.request_handler

        def connection_made(handler: web.RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._connections[handler] = conn = _Connection()
            self._arm(handler, conn)

        def connection_lost(handler: web.RequestHandler, exc: BaseException | None = None) -> None:
            conn = self._connections.pop(handler, None)
            if conn is not None and conn.timer is not None:
                conn.timer.cancel()
            lost(handler, exc)

        async def request_handler(request: web.BaseRequest) -> web.StreamResponse:
            protocol = request.protocol
            conn = self._connections.get(protocol)
            if conn is not None:
                conn.served = True
                if conn.timer is not None:
                    conn.timer.cancel()
                    conn.timer = None
            try:
                return await handle(request)
            finally:
                # Waiting for the next head now (keep-alive), unless the connection is already gone.
                conn = self._connections.get(protocol)
                if conn is not None and conn.timer is None:
                    self._arm(protocol, conn)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_handler = request_handler

    def _arm(self, protocol: web.RequestHandler, conn: _Connection) -> None:
        conn.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, protocol)

    def _expire(self, protocol: web.RequestHandler) -> None:
        conn = self._connections.get(protocol)
        if conn is None:
            return
        conn.timer = None
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return
        protocol.force_close()
        if not conn.served and self._on_expired is not None:
            self._on_expired()
