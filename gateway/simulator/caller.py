"""The simulated carrier leg of a phone call, over real HTTP and WebSockets. Not pure: the asyncio shell around
:mod:`~gateway.simulator.twilio_side` (playout; Twilio's protocol), :mod:`~gateway.simulator.carrier_side` (each
carrier's webhook, answer document, dialect and audio: ``SimulatorConfig.carrier``, Twilio by default),
:mod:`~gateway.simulator.turn_taking` (when to speak) and :mod:`~gateway.simulator.timeline` (what it all meant).

:func:`simulate_call` does what Twilio does for one inbound call (docs/architecture/twilio-media-streams.md):

1. POSTs the voice webhook as a form, signed with ``X-Twilio-Signature`` when an auth token is given (the URL
   signed is the gateway's public URL if given, else ``--url``), and reads the ``<Connect><Stream>`` TwiML;
2. opens the stream URL (mapped to the loopback base, see :func:`~gateway.simulator.twilio_side.resolve_stream_url`),
   signing the upgrade over the TwiML's ``wss://`` URL with no parameters, and sends ``connected`` and ``start``;
3. then runs one 20 ms clock: every tick it plays one frame out of Twilio's playout buffer (echoing the marks
   whose audio has played), lets the caller's script decide, and sends one ``media`` frame (turn audio, or μ-law
   silence between turns: a real line always carries frames);
4. hangs up with ``stop`` and a close when the script is done, or records that the gateway hung up.

Two tasks per call (the clock and the socket reader) live in one ``asyncio.TaskGroup``; whichever ends the call
raises, the group cancels the other, and the socket is closed on every path. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from ..audio import g711
from .carrier_side import CallIds, CarrierSide, Message, SideOptions, StreamTarget, new_carrier_side
from .errors import CallRefused, GatewayProtocolError, UsageError
from .tcp_stream import TcpFrameStream
from .timeline import CallRecord, TurnSpec, frame_levels
from .turn_taking import AUDIBLE_RMS, HangUp, StartTurn, TurnTaking, TurnTakingConfig, frame_audible
from .twilio_side import (
    FRAME_BYTES,
    FRAME_S,
    SILENCE_FRAME,
    GatewayClear,
    GatewayMark,
    GatewayMedia,
    PlayoutBuffer,
    new_sid,
    resolve_stream_url,
)

if TYPE_CHECKING:
    from gateway.local_agent.speech import Synthesizer

from ..errors import GatewayError

__all__ = [
    "CALLER_LENGTH_SCALE",
    "CallerTurn",
    "dtmf_turn",
    "SimulatorConfig",
    "load_caller_voice",
    "say_turn",
    "simulate_call",
    "trim_silence",
    "wav_turn",
    "write_wav",
]

#: The caller speaks slower than the agent (Piper's default 1.0) and without Piper's random variation, so the two
#: voices are told apart by ear and runs are repeatable.
CALLER_LENGTH_SCALE = 1.2
#: Silence kept around each caller turn after trimming (the line carries silence between turns anyway).
TRIM_KEEP_S = 0.1
_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CallerTurn:
    """One thing the caller says: 8 kHz μ-law, trimmed to the speech."""

    source: str  # say | wav | dtmf
    label: str  # the text, or the WAV's path
    ulaw: bytes


@dataclass(frozen=True)
class SimulatorConfig:
    url: str = "http://127.0.0.1:8080"
    #: Which carrier to play (gateway.simulator.carrier_side): its webhook, answer document, dialect and audio.
    carrier: str = "twilio"
    #: L16 byte order the carrier side plays (assumed | big | little) and a Telnyx L16 stream (gateway.simulator
    #: .carrier_side.SideOptions): what the answer document cannot say.
    l16_byte_order: str = "assumed"
    telnyx_codec: str = ""
    turns: tuple[CallerTurn, ...] = ()
    auth_token: str = ""
    #: The base URL the gateway signs webhooks against (its GATEWAY_PUBLIC_URL); default: ``url``.
    public_url: str = ""
    from_: str = "+15550100001"
    to: str = "+15550100002"
    pause_s: float = 1.2
    barge_in_after_s: float | None = None
    hangup_after_s: float | None = None
    #: After the last turn (or none at all: a silent caller), stay on the line saying nothing until the gateway
    #: hangs up (or ``hangup_after_s``), instead of hanging up.
    stay_on_line: bool = False
    greeting_timeout_s: float = 5.0
    reply_timeout_s: float = 10.0
    max_reply_s: float = 60.0
    max_call_s: float = 600.0
    http_timeout_s: float = 10.0
    #: The gateway's GATEWAY_API_KEY: after the call, ask GET /calls/{call_sid} where its record went.
    api_key: str = ""
    #: How long to wait for the record to be stored after the call.
    records_timeout_s: float = 10.0
    #: ``host:port`` of the gateway's AudioSocket listener (``carriers.audiosocket.listen``), for ``audiosocket``:
    #: the dialplan names it, not the UUID endpoint's answer. Default: ``url``'s host, port 9092.
    audiosocket: str = ""

    def turn_taking(self) -> TurnTakingConfig:
        def frames(s: float) -> int:
            return max(1, round(s / FRAME_S))

        return TurnTakingConfig(
            turns=len(self.turns),
            pause=frames(self.pause_s),
            greeting_timeout=frames(self.greeting_timeout_s),
            reply_timeout=frames(self.reply_timeout_s),
            max_reply=frames(self.max_reply_s),
            barge_in_after=frames(self.barge_in_after_s) if self.barge_in_after_s is not None else None,
            hangup_after=frames(min(self.hangup_after_s or self.max_call_s, self.max_call_s)),
            stay_on_line=self.stay_on_line,
        )


# ---- caller audio ------------------------------------------------------------------------------------------------
def trim_silence(ulaw: bytes, keep_s: float = TRIM_KEEP_S) -> bytes:
    """Cut leading and trailing silence down to ``keep_s``; whole 20 ms frames. Raises UsageError if silent."""
    ulaw = ulaw + SILENCE_FRAME[: (-len(ulaw)) % FRAME_BYTES]
    levels = frame_levels(ulaw)
    threshold = max(AUDIBLE_RMS, 0.03 * float(levels.max(initial=0.0)))
    loud = np.flatnonzero(levels > threshold)
    if loud.size == 0:
        raise UsageError("the caller's audio is silent")
    keep = round(keep_s / FRAME_S)
    first = max(0, int(loud[0]) - keep)
    last = min(len(levels), int(loud[-1]) + 1 + keep)
    return ulaw[first * FRAME_BYTES : last * FRAME_BYTES]


def _to_ulaw8k(samples: np.ndarray, rate: int) -> bytes:
    """Float mono samples in [-1, 1] at ``rate`` → 8 kHz μ-law (soxr HQ)."""
    import soxr

    if rate != 8000:
        samples = soxr.resample(samples, rate, 8000, quality="HQ")
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    return g711.pcm16_to_ulaw(pcm.tobytes())


def wav_turn(path: str | Path) -> CallerTurn:
    """A caller turn from a PCM WAV file of any rate, mono or stereo (mixed down)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"{path}: not a PCM WAV file ({exc}); convert it, e.g. sox in.wav -b 16 out.wav") from None
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:  # pragma: no cover - wave rejects other widths first
        raise UsageError(f"{path}: unsupported sample width {width}")
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    if x.size == 0:
        raise UsageError(f"{path}: no audio")
    try:
        return CallerTurn("wav", str(path), trim_silence(_to_ulaw8k(x, rate)))
    except UsageError:
        raise UsageError(f"{path}: the audio is silent") from None


def load_caller_voice(cpu_threads: int = 1) -> Synthesizer:
    """The local agent's Piper voice, for ``--say``. Only the TTS is loaded (not Whisper or the VAD)."""
    try:
        from gateway.local_agent.speech import SpeechModelMissing
        from gateway.local_agent.speech.assets import locate_model_files
        from gateway.local_agent.speech.tts import Synthesizer
    except ImportError as exc:
        raise UsageError(f"--say needs the offline speech stack: pip install -e '.[speech]' ({exc})") from None
    try:
        files = locate_model_files()
        return Synthesizer.load(files.piper_onnx, files.piper_json, cpu_threads=cpu_threads)
    except (ImportError, SpeechModelMissing, FileNotFoundError) as exc:
        raise UsageError(f"--say needs the offline speech stack: pip install -e '.[speech]' ({exc})") from None


def say_turn(text: str, voice: Synthesizer) -> CallerTurn:
    """``text`` spoken by the caller's voice through a simulated phone line (band-pass, 8 kHz μ-law)."""
    from gateway.local_agent.speech.phone import phone_path

    pcm = b"".join(
        chunk
        for _sentence, chunk in voice.synthesize(
            text, length_scale=CALLER_LENGTH_SCALE, noise_scale=0.0, noise_w_scale=0.0
        )
    )
    if not pcm:
        raise UsageError(f"--say {text!r}: the voice produced no audio")
    return CallerTurn("say", text, trim_silence(phone_path(pcm, voice.SAMPLE_RATE)))


def dtmf_turn(digits: str) -> CallerTurn:
    """The caller presses keys: the carrier's DTMF messages at the turn's start, then 200 ms of the line's silence
    (only for carriers whose side sends DTMF: ``audiosocket``)."""
    if not digits or any(d not in "0123456789*#ABCD" for d in digits):
        raise UsageError(f"{digits!r}: DTMF digits are 0-9, *, #, A-D")
    return CallerTurn("dtmf", digits, SILENCE_FRAME * 10)


def write_wav(path: str | Path, ulaw: bytes | bytearray) -> None:
    """8 kHz PCM16 mono WAV of μ-law audio."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(g711.ulaw_to_pcm16(bytes(ulaw)))


# ---- the call ------------------------------------------------------------------------------------------------------
class _Ended(GatewayError):
    """Unwinds the call's tasks: someone hung up (not an error)."""

    def __init__(self, by: str, reason: str) -> None:
        super().__init__(f"{by}: {reason}")
        self.by = by
        self.reason = reason


async def _fetch_stored(config: SimulatorConfig, record: CallRecord, session: aiohttp.ClientSession) -> None:
    """Where the gateway stored the call: GET /calls/{call_sid} until it answers (records are stored just after the
    call ends), at most ``records_timeout_s``."""
    url = f"{record.base_url}/calls/{record.call_sid}"
    headers = {"Authorization": f"Bearer {config.api_key}"}
    deadline = time.monotonic() + config.records_timeout_s
    while True:
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    doc = await r.json()
                    rec = doc.get("recording") or {}
                    record.stored = {
                        "url": url,
                        "record": r.headers.get("X-Record-Location"),
                        "recording": rec.get("location"),
                        "recording_url": f"{record.base_url}{rec['path']}" if rec.get("path") else None,
                    }
                    return
                if r.status != 404 or "records are off" in await r.text():
                    record.warnings.append(f"GET /calls/{{call_sid}}: {r.status}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.warnings.append(f"GET /calls/{{call_sid}}: {exc!r}")
            return
        if time.monotonic() > deadline:
            record.warnings.append("the gateway stored no record of this call in time")
            return
        await asyncio.sleep(0.2)


async def simulate_call(config: SimulatorConfig, *, http: aiohttp.ClientSession | None = None) -> CallRecord:
    """Place one simulated call against the gateway at ``config.url``. Never raises for anything the gateway did:
    refusals and protocol errors end up in ``record.outcome`` / ``record.errors`` (and the timeline's exit code)."""
    record = CallRecord(
        base_url=config.url.rstrip("/"),
        call_sid=new_sid("CA"),
        account_sid=new_sid("AC"),
        from_=config.from_,
        to=config.to,
        turns=tuple(TurnSpec(t.source, t.label) for t in config.turns),
        pause_s=config.pause_s,
    )
    record.stream_sid = new_sid("MZ")
    ids = CallIds(record.call_sid, record.account_sid, record.stream_sid, config.from_, config.to)
    side = new_carrier_side(config.carrier, ids, SideOptions(config.l16_byte_order, config.telnyx_codec))
    if any(t.source == "dtmf" for t in config.turns) and not hasattr(side, "dtmf"):
        raise UsageError(f"the {config.carrier} side of the simulator cannot send DTMF")
    own_http = http is None
    session = http or aiohttp.ClientSession()
    try:
        target = await _dial(config, record, session, side, ids)
        ws = await _open_stream(config, record, session, side, target)
        try:
            await _Call(config, record, ws, side, target).run()
        finally:
            if not ws.closed:
                try:
                    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                        await ws.close()
                except TimeoutError:
                    pass
        if config.api_key:
            await _fetch_stored(config, record, session)
    except CallRefused as exc:
        record.outcome = "refused" if record.outcome == "completed" else record.outcome
        record.errors.append(str(exc))
    except GatewayProtocolError as exc:
        record.outcome = "protocol_error"
        record.errors.append(str(exc))
    finally:
        if own_http:
            await session.close()
    return record


async def _dial(
    config: SimulatorConfig, record: CallRecord, http: aiohttp.ClientSession, side: CarrierSide, ids: CallIds
) -> StreamTarget:
    """The carrier's webhook (Twilio: docs/architecture/twilio-media-streams.md#signatures; the others:
    docs/how-to/carriers/index.md): make the request, check the answer, parse it."""
    req = side.webhook(ids, (config.public_url or config.url).rstrip("/"), config.auth_token)
    url = config.url.rstrip("/") + req.path
    record.signed = req.signed
    record.webhook_url = url
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(config.http_timeout_s):
            async with http.request(
                req.method,
                url,
                data=req.body if req.body is not None else req.form,
                params=req.query,
                headers=req.headers,
            ) as resp:
                body = await resp.text()
                record.webhook_status = resp.status
                content_type = resp.content_type
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        record.outcome = "connect_failed"
        raise CallRefused(f"could not reach the webhook {url}: {exc or type(exc).__name__}") from None
    record.webhook_ms = (time.perf_counter() - t0) * 1000
    if record.webhook_status != 200:
        raise CallRefused(f"webhook answered HTTP {record.webhook_status}: {body.strip()[:200]!r}")
    json_carrier = config.carrier in ("vonage", "exotel")
    expected: tuple[str, ...] = getattr(side, "answer_types", ())
    if content_type not in (expected or (("application/json",) if json_carrier else ("application/xml", "text/xml"))):
        record.warnings.append(
            f"webhook answered Content-Type {content_type!r}; {config.carrier} expects "
            + (" or ".join(expected) if expected else "JSON" if json_carrier else "XML")
        )
    stream = side.read_answer(body, content_type, url)
    record.warnings.extend(stream.warnings)
    record.twiml_url = stream.url
    record.parameter_names = tuple(sorted(stream.parameters))
    return stream


async def _open_stream(
    config: SimulatorConfig, record: CallRecord, http: aiohttp.ClientSession, side: CarrierSide, stream: StreamTarget
) -> aiohttp.ClientWebSocketResponse | TcpFrameStream:
    if getattr(side, "transport", "ws") == "tcp":  # a PBX's TCP media connection (AudioSocket)
        host, _, port = (config.audiosocket or f"{urlsplit(config.url).hostname}:9092").rpartition(":")
        record.connected_url = f"tcp://{host}:{port}"
        try:
            async with asyncio.timeout(config.http_timeout_s):
                return await TcpFrameStream.open(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError) as exc:
            record.outcome = "connect_failed"
            raise CallRefused(f"could not connect to {record.connected_url}: {exc or type(exc).__name__}") from None
    target = resolve_stream_url(stream.url, config.url)
    record.connected_url = target
    headers = side.upgrade_headers(stream, config.auth_token)
    offered: tuple[str, ...] = getattr(side, "subprotocols", ())
    try:
        async with asyncio.timeout(config.http_timeout_s):
            ws = await http.ws_connect(target, headers=headers, max_msg_size=1 << 20, autoping=True, protocols=offered)
    except aiohttp.WSServerHandshakeError as exc:
        raise CallRefused(f"stream upgrade refused: HTTP {exc.status} {exc.message}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        record.outcome = "connect_failed"
        raise CallRefused(f"could not open the stream {target}: {exc or type(exc).__name__}") from None
    if offered and ws.protocol not in offered:
        await ws.close()
        # libwebsockets clients (FreeSWITCH's modules) fail a handshake whose answer drops the offered subprotocol.
        raise GatewayProtocolError(f"the upgrade answer selected subprotocol {ws.protocol!r}, not one of {offered}")
    return ws


class _Call:
    """One open stream: the 20 ms clock and the socket reader."""

    def __init__(
        self,
        config: SimulatorConfig,
        record: CallRecord,
        ws: aiohttp.ClientWebSocketResponse | TcpFrameStream,
        side: CarrierSide,
        target: StreamTarget,
    ) -> None:
        self._config = config
        self._record = record
        self._ws = ws
        self._target = target
        self._side = side
        self._buffer = PlayoutBuffer()
        self._script = TurnTaking(config.turn_taking())
        self._send_lock = asyncio.Lock()
        self._t0 = 0.0
        self._turn: CallerTurn | None = None
        self._turn_pos = 0
        self._frame = 0  # the frame now playing
        self._stopped = False
        self._clear_acks = 0  # clears to acknowledge (Plivo clearedAudio, Vonage websocket:cleared)

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def run(self) -> None:
        """Serve the stream until someone hangs up. Raises GatewayProtocolError (after hanging up) if the gateway
        broke the protocol."""
        loop = asyncio.get_running_loop()
        self._t0 = self._record.stream_t0 = loop.time()
        error: GatewayProtocolError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                # The reader runs before we send `start`, so anything the gateway sends too early is caught
                # (docs/architecture/twilio-media-streams.md#before-start).
                tg.create_task(self._reader(), name="simulator.reader")
                await self._send(self._side.connected)
                await self._send(lambda: self._side.start(self._target))
                tg.create_task(self._clock(), name="simulator.clock")
        except* GatewayProtocolError as eg:
            err = eg.exceptions[0]
            assert isinstance(err, GatewayProtocolError)
            error = err
            self._record.add(self._now(), "protocol_error", message=str(err))
            self._record.add(self._now(), "hangup", by="caller", reason="protocol_error")
        except* _Ended as eg:
            end = eg.exceptions[0]
            assert isinstance(end, _Ended)
            if error is None:
                self._record.add(self._now(), "hangup", by=end.by, reason=end.reason)
        finally:
            # Whatever ended the call (even Ctrl-C or our own bug): send `stop`, as Twilio does on hang-up.
            await self._hang_up_quietly()
        if error is not None:
            raise error

    async def _send(self, build: Callable[[], list[Message]]) -> None:
        # Built under the lock so sequenceNumbers go out in order.
        async with self._send_lock:
            if self._ws.closed:
                raise _Ended("gateway", f"socket closed (code {self._ws.close_code})")
            try:
                for msg in build():
                    if isinstance(msg, bytes):
                        await self._ws.send_bytes(msg)
                    else:
                        await self._ws.send_str(msg)
            except ConnectionError:
                raise _Ended("gateway", "socket closed while sending") from None

    async def _hang_up_quietly(self) -> None:
        if self._stopped or self._ws.closed:
            return
        self._stopped = True
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                for msg in self._side.stop():  # none for carriers whose hang-up is the close (Plivo, Vonage)
                    await (self._ws.send_bytes(msg) if isinstance(msg, bytes) else self._ws.send_str(msg))
        except (TimeoutError, ConnectionError):
            pass

    # ---- the line clock ------------------------------------------------------------------------------------------
    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        frame = 0
        while True:
            # Ticks are scheduled on the ideal 20 ms grid; after a stall we catch up in a burst (as jitter would),
            # so positions in the recorded audio stay true times.
            delay = self._t0 + frame * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._tick(frame)
            frame += 1

    async def _tick(self, frame: int) -> None:
        self._frame = frame
        played, had_audio, due = self._buffer.tick()
        for name in due:
            await self._echo(name, flushed=False)
        self._record.heard += played
        action = self._script.on_frame(frame, had_audio and frame_audible(played))
        t = frame * FRAME_S
        if isinstance(action, HangUp):
            await self._send(self._side.stop)
            self._stopped = True
            raise _Ended("caller", action.reason)
        if isinstance(action, StartTurn):
            self._turn = self._config.turns[action.index]
            self._turn_pos = 0
            if self._turn.source == "dtmf":  # the side has dtmf(): checked before dialling
                digits, keys = self._turn.label, self._side.dtmf  # type: ignore[attr-defined]
                await self._send(lambda: [m for d in digits for m in keys(d)])
            self._record.add(t, "turn_started", index=action.index, barge_in=action.barge_in)
        payload = SILENCE_FRAME
        if self._turn is not None:
            chunk = self._turn.ulaw[self._turn_pos : self._turn_pos + FRAME_BYTES]
            payload = chunk + SILENCE_FRAME[len(chunk) :]
            self._turn_pos += FRAME_BYTES
        await self._send(lambda: self._side.media(payload, round(t * 1000)))
        self._record.said += payload
        self._record.media_sent += 1
        if self._turn is not None and self._turn_pos >= len(self._turn.ulaw):
            self._record.add(t + FRAME_S, "turn_ended", index=self._script.turn)
            self._script.turn_finished(frame + 1)
            self._turn = None

    # ---- the socket reader ---------------------------------------------------------------------------------------
    async def _reader(self) -> None:
        ws = self._ws
        while True:
            # Bounded by the call's own maximum: between replies the gateway may rightly send nothing for a while.
            msg = await ws.receive(timeout=self._config.max_call_s)
            if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
                for name, flushed in self._on_message(self._side.parse(msg.data)):
                    await self._echo(name, flushed=flushed)
                if self._side.warnings:  # advice of the carrier's docs the gateway did not follow: once each
                    self._record.warnings += [w for w in self._side.warnings if w not in self._record.warnings]
                    self._side.warnings.clear()
                if self._clear_acks:
                    self._clear_acks = 0
                    await self._send(self._side.cleared)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise _Ended("gateway", f"socket error: {ws.exception()}")
            else:  # CLOSE / CLOSING / CLOSED
                raise _Ended("gateway", f"socket closed (code {ws.close_code})")

    def _on_message(self, msg: object) -> list[tuple[str, bool]]:
        """Apply one gateway message to the playout buffer; returns the marks to echo now (name, flushed)."""
        now = self._now()
        if isinstance(msg, GatewayMedia):
            self._record.media_received += 1
            self._record.media_received_bytes += len(msg.payload)
            self._buffer.push_audio(msg.payload)
        elif isinstance(msg, GatewayMark):
            self._record.add(now, "mark_received", name=msg.name)
            return [(n, False) for n in self._buffer.push_mark(msg.name)]
        elif isinstance(msg, GatewayClear):
            self._script.on_clear(self._frame)
            cleared = self._buffer.clear()
            self._record.add(now, "clear", dropped_ms=cleared.dropped_bytes / 8, marks=list(cleared.marks))
            self._clear_acks += 1
            # Twilio-style carriers echo every pending mark when they clear
            # (docs/architecture/twilio-media-streams.md#marks-and-clear); Plivo and Vonage drop them and
            # acknowledge the clear instead (docs/how-to/carriers/index.md#comparison), sent by the reader after this.
            return [(n, True) for n in cleared.marks] if self._side.echo_marks_on_clear else []
        return []

    async def _echo(self, name: str, *, flushed: bool) -> None:
        await self._send(lambda: self._side.mark_echo(name))
        self._record.add(self._now(), "mark_echoed", name=name, flushed=flushed)


def turns_from_args(items: Sequence[tuple[str, str]], voice_loader: Callable[[], Synthesizer]) -> list[CallerTurn]:
    """``[("say", text) | ("wav", path), …]`` in command-line order → caller turns (the voice loaded only if needed)."""
    voice: Synthesizer | None = None
    turns: list[CallerTurn] = []
    for kind, value in items:
        if kind == "wav":
            turns.append(wav_turn(value))
        else:
            if voice is None:
                voice = voice_loader()
            turns.append(say_turn(value, voice))
    return turns
