"""The called side of an outbound call, as the simulator plays it (docs/how-to/conversation.md#voicemail). Not pure:
the asyncio shell of :mod:`gateway.simulator.caller`, reused.

:func:`answer_outbound_call` does what Twilio does once the callee picks up a call the gateway placed with
``POST /calls``: it reads the TwiML the gateway sent with the create-call request, opens the stream it names (signed
like any Twilio upgrade) and plays the callee. An **answering machine** (:func:`answering_machine_turn`: a greeting,
then a beep) speaks at once, without waiting for anyone; once its greeting has played, the simulator posts Twilio's
asynchronous AMD result (``AnsweredBy=machine_end_beep``, signed like every Twilio callback) to the call's
``AsyncAmdStatusCallback``, then keeps the line open, silent, "recording", until the gateway hangs up.

:class:`TransferTarget` is the person a warm transfer dials (docs/how-to/conversation.md#warm-transfer): it picks
up, hears the leg's ``<Say>`` (the whisper) and enters its ``<Dial><Conference>``; :meth:`TransferTarget.answer`
says what it heard and builds the signed ``participant-join`` report Twilio posts to the room's ``statusCallback``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from xml.etree import ElementTree

import aiohttp
import numpy as np

from ..audio import g711
from ..security import twilio_signature
from .caller import CallerTurn, SimulatorConfig, _Call, _open_stream, say_turn
from .carrier_side import CallIds, new_carrier_side
from .errors import CallRefused, GatewayProtocolError
from .timeline import CallRecord, TurnSpec
from .twilio_side import new_sid

if TYPE_CHECKING:
    from gateway.local_agent.speech import Synthesizer

__all__ = ["AmdCallback", "TransferTarget", "answer_outbound_call", "answering_machine_turn", "beep"]


@dataclasses.dataclass(frozen=True)
class AmdCallback:
    """Twilio's side of asynchronous answering-machine detection: where to post the result (the create-call's
    ``AsyncAmdStatusCallback``, signed over that URL with ``auth_token``) and what it says."""

    url: str
    auth_token: str
    answered_by: str = "machine_end_beep"


def beep(seconds: float = 0.4, freq: float = 1000.0) -> bytes:
    """A voicemail beep: a pure tone, 8 kHz μ-law."""
    t = np.arange(int(seconds * 8000)) / 8000
    return g711.pcm16_to_ulaw((np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype("<i2").tobytes())


def answering_machine_turn(voice: Synthesizer, greeting: str) -> CallerTurn:
    """A machine's greeting spoken by the caller's voice, 0.3 s of silence, then the beep."""
    spoken = say_turn(greeting, voice).ulaw
    return CallerTurn("machine", greeting, spoken + bytes([g711.ULAW_SILENCE]) * 2400 + beep())


@dataclasses.dataclass
class TransferTarget:
    """The person at the other end of a warm transfer's leg."""

    heard: list[str] = dataclasses.field(default_factory=list)  # what it was told before joining (the whisper)
    room: str = ""

    def answer(self, twiml: str, call_sid: str, account_sid: str, auth_token: str) -> tuple[str, dict[str, str]] | None:
        """Pick up the leg whose TwiML is ``twiml``: hear each ``<Say>``, then enter the room. Returns where Twilio
        posts the ``participant-join`` report and its signed form (with ``X-Twilio-Signature`` under that key), or
        None when the room asked for no such report."""
        root = ElementTree.fromstring(twiml)
        self.heard += [say.text or "" for say in root.iter("Say")]
        room = root.find("./Dial/Conference")
        if room is None or not (room.text or "").strip():
            raise GatewayProtocolError("the transfer leg's TwiML enters no <Conference>")
        self.room = room.text or ""
        url = room.attrib.get("statusCallback", "")
        if not url or "join" not in room.attrib.get("statusCallbackEvent", "").split():
            return None
        form = {
            "AccountSid": account_sid,
            "ConferenceSid": "CF" + hashlib.sha256(self.room.encode()).hexdigest()[:32],
            "FriendlyName": self.room,
            "StatusCallbackEvent": "participant-join",
            "CallSid": call_sid,
            "Muted": "false",
            "Hold": "false",
            "Coaching": "false",
            "EndConferenceOnExit": room.attrib.get("endConferenceOnExit", "false"),
            "StartConferenceOnEnter": room.attrib.get("startConferenceOnEnter", "true"),
            "SequenceNumber": "1",
            "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }
        return url, {**form, "X-Twilio-Signature": twilio_signature(auth_token, url, form)}


class _AnsweredCall(_Call):
    """The callee's stream: the machine's turn, then (Twilio) the AMD result once it has played."""

    def __init__(self, *args: object, amd: AmdCallback | None, http: aiohttp.ClientSession) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._amd = amd
        self._http = http
        self._amd_sent = False

    async def _tick(self, frame: int) -> None:
        speaking = self._turn is not None
        await super()._tick(frame)
        if speaking and self._turn is None and self._amd is not None and not self._amd_sent:
            self._amd_sent = True
            await self._post_amd(self._amd, frame)

    async def _post_amd(self, amd: AmdCallback, frame: int) -> None:
        form = {
            "AccountSid": self._record.account_sid,
            "CallSid": self._record.call_sid,
            "AnsweredBy": amd.answered_by,
            "MachineDetectionDuration": str(round(frame * 20)),
        }
        headers = {"X-Twilio-Signature": twilio_signature(amd.auth_token, amd.url, form)} if amd.auth_token else {}
        target = self._config.url.rstrip("/") + urlsplit(amd.url).path
        async with self._http.post(target, data=form, headers=headers) as resp:
            self._record.add(frame * 0.02, "amd_posted", answered_by=amd.answered_by, status=resp.status)


async def answer_outbound_call(
    config: SimulatorConfig,
    twiml: str,
    call_sid: str,
    *,
    amd: AmdCallback | None = None,
    http: aiohttp.ClientSession | None = None,
) -> CallRecord:
    """Play the callee of an outbound call whose create-call request carried ``twiml``. ``config.turns`` is what the
    callee says (an answering machine: one :func:`answering_machine_turn`, spoken at once). Never raises for
    anything the gateway did (as :func:`gateway.simulator.caller.simulate_call`)."""
    config = dataclasses.replace(config, greeting_timeout_s=0.02, stay_on_line=True)  # a machine does not wait
    record = CallRecord(
        base_url=config.url.rstrip("/"),
        call_sid=call_sid,
        account_sid=new_sid("AC"),
        from_=config.from_,
        to=config.to,
        turns=tuple(TurnSpec(t.source, t.label) for t in config.turns),
        pause_s=config.pause_s,
    )
    record.stream_sid = new_sid("MZ")
    ids = CallIds(call_sid, record.account_sid, record.stream_sid, config.from_, config.to)
    side = new_carrier_side(config.carrier, ids)
    own_http = http is None
    session = http or aiohttp.ClientSession()
    try:
        target = side.read_answer(twiml, "text/xml", config.url)
        record.twiml_url = target.url
        ws = await _open_stream(config, record, session, side, target)
        try:
            await _AnsweredCall(config, record, ws, side, target, amd=amd, http=session).run()
        finally:
            if not ws.closed:
                await ws.close()
    except CallRefused as exc:
        record.outcome = "refused"
        record.errors.append(str(exc))
    except GatewayProtocolError as exc:
        record.outcome = "protocol_error"
        record.errors.append(str(exc))
    finally:
        if own_http:
            await session.close()
    return record
