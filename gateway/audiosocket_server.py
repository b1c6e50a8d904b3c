"""Asterisk AudioSocket's doors: the TCP listener Asterisk connects to, and the HTTP endpoint that issues the UUID
the dialplan connects with. Not pure: asyncio streams and aiohttp.

Both exist only when ``[carriers.audiosocket]`` is configured (docs/how-to/pbx/asterisk-audiosocket.md): the
listener when ``listen`` is set, the endpoint when the door is open (:meth:`gateway.config.Settings.open_doors`:
``AUDIOSOCKET_SECRET`` or ``allowed_networks`` set, or development). Without a listener the endpoint answers 503.

- ``GET|POST /audiosocket/calls?from=…&to=…`` (the dialplan's ``CURL()``, authenticated with
  ``AUDIOSOCKET_SECRET``: :mod:`gateway.carriers.audiosocket`): reserves a call slot like a carrier's webhook, mints
  the call's token for the profile its ``to`` selects, and answers a fresh UUID, valid once for
  ``carriers.audiosocket.uuid_ttl_s``.
- The listener: each connection is a call. The pure dialect (:class:`~gateway.carriers.audiosocket.AudioSocketStream`)
  parses the stream; the UUID frame's parameters come from the issued UUID (or, for a source address in
  ``allowed_networks``, from a token minted on the spot), so the session's usual token check admits the call, and a
  UUID never issued (or used, or expired) is refused like a stream without a token. The call then runs through the
  same admission, core and shell as every WebSocket carrier (:func:`gateway.media_stream.run_call`), over
  :class:`TcpCarrierLink`.

Logs: ``audiosocket.listening`` at start-up; the calls log as every carrier's do (``call.started``,
``call.protocol_error`` for a malformed frame, ``call.refused`` for an unknown UUID, ``call.ended``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web

from . import urls
from .admission import REFUSED_DRAINING
from .carriers.audiosocket import (
    HANGUP_FRAME,
    SPEC,
    UUID_PATH,
    AudioSocketSettings,
    AudioSocketStream,
    IssuedCalls,
    network_allowed,
    parse_listen,
)
from .carriers.spec import Malformed, Webhook
from .errors import CallEnded, Outcome
from .http_input import read_form
from .keys import AUDIOSOCKET, CALLS, METRICS, SETTINGS
from .media_stream import open_stream, run_call
from .outbound import token_subject
from .security import mint_call_token

__all__ = ["AudioSocketServer", "TcpCarrierLink", "setup"]

log = structlog.get_logger("gateway")

#: Bytes asked of the socket per read: a read returns what has arrived, usually one 20 ms frame.
READ_BYTES = 65536
#: How long closing a connection may take before it is dropped.
CLOSE_TIMEOUT_S = 2.0
#: At shutdown, how long connection handlers may take to finish their calls' teardown.
HANDLERS_TIMEOUT_S = 10.0


class TcpCarrierLink:
    """One AudioSocket connection as the call's carrier transport
    (:class:`gateway.call.shell.carrier.CarrierTransport`). ``receive`` hands over whatever bytes arrived (``b""``
    once, at the end of the stream: the dialect turns it into the hang-up or a truncated-frame error); ``send``
    writes each message in one write (a whole frame: Asterisk reads a frame's payload within 5 ms of its header);
    ``close`` sends the hang-up frame first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dialect: AudioSocketStream) -> None:
        self._reader = reader
        self._writer = writer
        self._dialect = dialect
        self.transport = writer.transport
        self._eof = False
        self._primed = False

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    async def receive(self) -> bytes:
        if not self._primed and self._dialect.stream_id is not None:
            # Audio from us right after the UUID frame: Asterisk can stall both directions when the server waits for
            # inbound audio before it sends anything (docs/how-to/pbx/asterisk-audiosocket.md#known-asterisk-bugs).
            self._primed = True
            await self.send(self._dialect.build_media(bytes(self._dialect.frame_bytes)))
        if self._eof:
            raise CallEnded(Outcome.CARRIER_CLOSED)
        try:
            data = await self._reader.read(READ_BYTES)
        except ConnectionError:
            raise CallEnded(Outcome.CARRIER_CLOSED) from None
        if not data:
            self._eof = True
        return data

    async def send(self, data: str | bytes) -> None:
        if not data:
            return  # AudioSocket's "clear" is nothing on the wire
        if self.transport.is_closing():
            raise CallEnded(Outcome.CARRIER_CLOSED)
        assert isinstance(data, bytes)  # the dialect builds binary frames only
        self._writer.write(data)
        if self.transport.get_write_buffer_size():
            try:
                await self._writer.drain()
            except ConnectionError:
                raise CallEnded(Outcome.CARRIER_CLOSED) from None

    def backlogged(self) -> bool:
        return self.transport.get_write_buffer_size() > 0

    async def close(self, code: int, message: bytes = b"") -> None:
        """Hang up (``00 00 00``) and close, bounded; a peer that reads nothing is dropped."""
        transport = self.transport
        if transport.is_closing():
            return
        if self.backlogged():
            transport.abort()
            return
        if not self._eof and self._dialect.stream_id is not None:
            self._writer.write(HANGUP_FRAME)
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError):
            transport.abort()


class AudioSocketServer:
    """The listener and the UUIDs issued for it (``app[AUDIOSOCKET]``). ``address``: where it listens, once
    started (host, port)."""

    def __init__(self, app: web.Application, options: AudioSocketSettings) -> None:
        self._app = app
        self.options = options
        self.issued = IssuedCalls(options.uuid_ttl_s)
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        # The HTTP listener's own address, as the UUID endpoint last saw it: the embedded agent is reached there.
        self._http_local: Sequence[Any] | None = None

    # ---- the UUID endpoint -----------------------------------------------------------------------------------------
    async def issue(self, request: web.Request) -> web.Response:
        app = request.app
        settings = app[SETTINGS]
        door = settings.carrier_door(SPEC.name)
        form = (await read_form(request))[0] if request.method == "POST" else {}
        hook = Webhook(
            method=request.method,
            url=request.path_qs,
            headers=request.headers,
            query=request.query,
            form=form,
            remote=request.remote,
            now=time.time(),
        )
        if SPEC.authenticated(door):
            refusal = SPEC.verify(hook, door)
            if refusal is not None:
                log.warning("webhook.refused", reason=refusal.reason, carrier=SPEC.name, call_sid=None)
                app[METRICS].refused("webhook", refusal.reason.replace(" ", "_"))
                return web.Response(status=refusal.status, text=refusal.text or refusal.reason)
        if self._server is None:
            return web.Response(status=503, text="no AudioSocket listener (carriers.audiosocket.listen is empty)")
        call = SPEC.read_call(hook)
        if isinstance(call, Malformed):  # pragma: no cover - AudioSocket's read_call takes any request
            return web.Response(status=400, text=call.text)
        call_uuid = str(uuid.uuid4())
        calls = app[CALLS]
        reserved = calls.admission.reserve(call_uuid, time.monotonic())
        if reserved is not None:
            reason = "draining" if reserved == REFUSED_DRAINING else "at_capacity"
            log.warning("webhook.refused", reason=reason, call_sid=call_uuid, carrier=SPEC.name, active=len(calls))
            app[METRICS].refused("webhook", reason)
            busy = SPEC.busy("")
            return web.Response(text=busy.body, content_type=busy.content_type, status=busy.status)
        called, caller = call.called, call.caller
        profile = settings.profile_for(called)[0]
        token = mint_call_token(
            settings.secrets.token_secret,
            token_subject({}, call_uuid, profile),
            time.time(),
            settings.server.call_token_ttl_s,
            scope=SPEC.name,
        )
        self.issued.issue(call_uuid, {"token": token, "from": caller, "to": called}, time.monotonic())
        self._http_local = urls.sockname(request.transport)
        log.info("webhook.answered", call_sid=call_uuid, carrier=SPEC.name)
        return web.Response(text=call_uuid, content_type="text/plain")

    def _credentials(self, call_uuid: str, remote: str | None) -> Mapping[str, str] | None:
        """The UUID frame's parameters: those it was issued with (once), or, from an allowed network, a token minted
        now for the default profile; else None (the call is refused for want of a token)."""
        params = self.issued.claim(call_uuid, time.monotonic())
        if params is not None:
            return params
        if self.options.allowed_networks and network_allowed(remote, self.options.allowed_networks):
            settings = self._app[SETTINGS]
            profile = settings.profile_for("")[0]
            token = mint_call_token(
                settings.secrets.token_secret,
                token_subject({}, call_uuid, profile),
                time.time(),
                settings.server.call_token_ttl_s,
                scope=SPEC.name,
            )
            return {"token": token}
        return None

    # ---- the listener --------------------------------------------------------------------------------------------
    async def serve(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: listen for the app's lifetime; at shutdown stop listening and let the calls' handlers (their
        sockets closed by the app's on_shutdown) finish, bounded."""
        host, port = parse_listen(self.options.listen)
        self._server = await asyncio.start_server(self._accept, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("audiosocket.listening", host=self.address[0], port=self.address[1])
        try:
            yield
        finally:
            self._server.close()
            await self._server.wait_closed()
            if self._handlers:
                _done, pending = await asyncio.wait(set(self._handlers), timeout=HANDLERS_TIMEOUT_S)
                for task in pending:
                    task.cancel()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        finally:
            self._handlers.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        app = self._app
        sock = writer.get_extra_info("socket")
        if sock is not None:  # each 20 ms frame leaves at once (asyncio sets this itself, uvloop may not)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ticket = open_stream(app)
        if ticket is None:
            writer.close()
            return
        try:
            peer = writer.get_extra_info("peername")
            remote = str(peer[0]) if peer else None
            dialect = AudioSocketStream(
                self.options.sample_rate, credentials=lambda call_uuid: self._credentials(call_uuid, remote)
            )
            link = TcpCarrierLink(reader, writer, dialect)
            await run_call(app, dialect, ticket, carrier=link, scope=SPEC.name, local=self._http_local)
        finally:
            app[CALLS].admission.release(ticket)


def setup(app: web.Application) -> None:
    """The UUID endpoint when AudioSocket's door is open, and the listener when ``listen`` is set."""
    settings = app[SETTINGS]
    doors = settings.open_doors()
    if SPEC.name not in doors:
        return
    options = settings.carriers[SPEC.name]
    assert isinstance(options, AudioSocketSettings)
    server = AudioSocketServer(app, options)
    app[AUDIOSOCKET] = server
    app.router.add_get(UUID_PATH, server.issue)
    app.router.add_post(UUID_PATH, server.issue)
    if options.listen:
        if not doors[SPEC.name]:
            log.warning(
                "carrier.unauthenticated",
                carrier=SPEC.name,
                detail="its UUID endpoint issues UUIDs to anyone who can reach this port; set AUDIOSOCKET_SECRET or "
                "carriers.audiosocket.allowed_networks before exposing the gateway (docs/security.md)",
            )
        app.cleanup_ctx.append(server.serve)
