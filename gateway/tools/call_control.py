"""The call-control tools' pure parts: declarations, argument checks, the transfer allow-list and the keypad inbox.
Pure: no sockets, no clock reads (``now`` is passed in). The call (:mod:`gateway.call`) does the rest.

Built-in tools (docs/architecture/agent-api.md#tool-definitions: the flat format), declared in the first
``session.update`` when a profile lists them in ``tools`` (docs/how-to/call-control.md#give-the-agent-the-tools):

- ``end_call`` (declared in :mod:`gateway.tools.registry`): the goodbye plays (mark echo), then the call ends.
- ``transfer_call(destination, announcement?)``: the destination must be an E.164 number or a SIP URI *and* match
  one of the profile's ``transfer_allow`` patterns (``fnmatch``-style, e.g. ``"+1555*"``, ``"sip:*@pbx.example.com"``);
  anything else is an ``is_error`` result and nothing is redirected. Accepted: the tool result asks the agent to
  say the announcement (its own words; see :func:`transfer_accepted`), the session waits for that reply to be
  heard (mark echo), then redirects the call over REST with ``<Dial>``
  (docs/architecture/twilio-media-streams.md#transfer).
- ``send_dtmf(digits)``: keypad tones played into the call as audio (:mod:`gateway.audio.dtmf`), so the media
  stream stays up (a REST ``<Play digits>`` would tear it down, docs/architecture/twilio-media-streams.md#transfer /
  openclaw #139066).
- ``read_dtmf()``: the caller's keypresses collected since the last read (profile ``dtmf_mode = "buffer"``).

Inbound keypresses (Twilio ``dtmf`` events) go through :class:`DtmfInbox` per the profile's ``dtmf_mode``:
``"reply"`` (after ``dtmf_interdigit_ms`` without a further digit, one ``reply.create`` whose instructions name the
digits), ``"buffer"`` (kept for ``read_dtmf``) or ``"off"`` (counted and logged, never delivered). Digits are never
logged: they can be PINs or card numbers.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import deque
from collections.abc import Iterable
from typing import Any

from ..logs import mask_number

__all__ = [
    "TRANSFER_CALL",
    "SEND_DTMF",
    "READ_DTMF",
    "CALL_CONTROL_TOOLS",
    "DTMF_MODES",
    "MAX_DTMF_DIGITS",
    "declaration",
    "normalize_destination",
    "destination_allowed",
    "check_destination",
    "parse_digits",
    "transfer_accepted",
    "error_result",
    "dtmf_instructions",
    "DtmfInbox",
    "mask_destination",
]

TRANSFER_CALL = "transfer_call"
SEND_DTMF = "send_dtmf"
READ_DTMF = "read_dtmf"
CALL_CONTROL_TOOLS = frozenset({TRANSFER_CALL, SEND_DTMF, READ_DTMF})
DTMF_MODES = ("reply", "buffer", "off")
#: At most this many digits per ``send_dtmf`` (32 digits = 6.4 s of tones at 100 ms + 100 ms).
MAX_DTMF_DIGITS = 32
#: The inbox keeps at most this many unread digits (the oldest go first).
INBOX_LIMIT = 64

_DECLARATIONS: dict[str, dict[str, Any]] = {
    TRANSFER_CALL: {
        "type": "function",
        "name": TRANSFER_CALL,
        "description": "Transfer the caller to another phone number or SIP address. Tell the caller first; the "
        "transfer happens right after you finish speaking.",
        "parameters": {
            "type": "object",
            "properties": {
                "destination": {
                    "type": "string",
                    "description": (
                        "E.164 phone number such as +15551234567, or a SIP URI such as sip:desk@pbx.example.com."
                    ),
                },
                "announcement": {
                    "type": "string",
                    "description": "What to tell the caller before the transfer, e.g. 'Connecting you to billing now.'",
                },
                "mode": {
                    "type": "string",
                    "enum": ["cold", "warm"],
                    "description": "cold (default): hand the call over at once. warm: the caller waits while the "
                    "person is called and briefed with your summary; if they do not answer, the caller stays "
                    "with you and you are told why.",
                },
                "summary": {
                    "type": "string",
                    "description": "warm: what the person should know before they take the call (who is calling, "
                    "what about).",
                },
            },
            "required": ["destination"],
        },
    },
    SEND_DTMF: {
        "type": "function",
        "name": SEND_DTMF,
        "description": "Press keys on the phone keypad (DTMF tones), e.g. to navigate a phone menu.",
        "parameters": {
            "type": "object",
            "properties": {
                "digits": {"type": "string", "description": "Keys to press: 0-9, *, #, A-D. Example: '1', '42#'."},
            },
            "required": ["digits"],
        },
    },
    READ_DTMF: {
        "type": "function",
        "name": READ_DTMF,
        "description": "Read the keys the caller pressed on their keypad since the last read.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}


def declaration(name: str) -> dict[str, Any]:
    """A fresh copy of a built-in call-control tool's declaration."""
    copy: dict[str, Any] = json.loads(json.dumps(_DECLARATIONS[name]))  # deep copy: callers may edit theirs
    return copy


# ---- transfer -------------------------------------------------------------------------------------------------
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_NUMBER_PUNCT = re.compile(r"[\s\-.()/]")
# user@host[:port][;params]: characters that need no XML escaping and cannot end the <Sip> element.
_SIP = re.compile(r"sips?:[A-Za-z0-9._~%!$*+,=\-]+@[A-Za-z0-9.\-]+(:[0-9]{1,5})?(;[A-Za-z0-9._~%=\-]+)*")


def normalize_destination(raw: object) -> str:
    """An E.164 number (spaces, dashes, dots, brackets dropped: agents often spell numbers out that way) or a SIP
    URI (scheme lower-cased). Raises ValueError saying what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("destination must be a non-empty string")
    text = raw.strip()
    if text[:4].lower() == "sip:" or text[:5].lower() == "sips:":
        scheme, _, rest = text.partition(":")
        uri = f"{scheme.lower()}:{rest}"
        if not _SIP.fullmatch(uri):
            raise ValueError("destination is not a valid SIP URI (sip:user@host)")
        return uri
    number = _NUMBER_PUNCT.sub("", text)
    if not _E164.fullmatch(number):
        raise ValueError("destination must be an E.164 number (+ and country code) or a sip: URI")
    return number


def destination_allowed(destination: str, patterns: Iterable[str]) -> bool:
    """True if ``destination`` (normalized) matches one of ``patterns`` (case-sensitive ``fnmatch``: ``*`` any run,
    ``?`` one character; SIP hosts compared lower-cased)."""
    target = destination.lower() if destination.startswith(("sip:", "sips:")) else destination
    for p in patterns:
        pat = p.lower() if p.lower().startswith(("sip:", "sips:")) else p
        if fnmatch.fnmatchcase(target, pat):
            return True
    return False


def check_destination(raw: object, patterns: Iterable[str]) -> tuple[str | None, str]:
    """(normalized destination, "") if it may be dialled, else (None, why not)."""
    try:
        dest = normalize_destination(raw)
    except ValueError as exc:
        return None, str(exc)
    if not destination_allowed(dest, patterns):
        return None, "destination is not on this line's transfer allow-list"
    return dest, ""


def mask_destination(destination: str) -> str:
    """For logs: numbers keep their last 4 digits, SIP URIs their host."""
    if destination.startswith(("sip:", "sips:")):
        return "sip:***@" + destination.rsplit("@", 1)[-1]
    return mask_number(destination)


def transfer_accepted(announcement: object) -> str:
    """The ``tool.result`` of an accepted transfer. The agent speaks next (the reply this result starts,
    docs/architecture/agent-api.md#tool-results); the result tells it what to say, and the session redirects once
    that reply was heard."""
    say = announcement.strip() if isinstance(announcement, str) and announcement.strip() else ""
    return json.dumps(
        {
            "ok": True,
            "status": "transfer pending: the call is transferred as soon as you finish your next sentence",
            "instructions": f"Say exactly this to the caller now: {say}"
            if say
            else "Tell the caller briefly that you are transferring them now.",
        }
    )


def error_result(message: str) -> str:
    return json.dumps({"ok": False, "error": message})


# ---- DTMF -----------------------------------------------------------------------------------------------------
_DIGIT_SEPARATORS = re.compile(r"[\s,\-]")
_DTMF = re.compile(r"[0-9*#A-D]+")


def parse_digits(raw: object) -> str:
    """Keypad digits for ``send_dtmf``: ``0``–``9``, ``*``, ``#``, ``A``–``D`` (upper-cased); spaces, commas and dashes
    are ignored. Raises ValueError for anything else, nothing at all, or more than ``MAX_DTMF_DIGITS``."""
    if not isinstance(raw, str):
        raise ValueError("digits must be a string")
    digits = _DIGIT_SEPARATORS.sub("", raw).upper()
    if not digits:
        raise ValueError("no digits given")
    if not _DTMF.fullmatch(digits):
        raise ValueError("digits may only contain 0-9, *, #, A-D")
    if len(digits) > MAX_DTMF_DIGITS:
        raise ValueError(f"at most {MAX_DTMF_DIGITS} digits at a time")
    return digits


def dtmf_instructions(digits: str) -> str:
    """``reply.create`` instructions that name the caller's keypresses (dtmf_mode "reply")."""
    spoken = " ".join(digits)
    return (
        f"The caller pressed these keys on their phone keypad: {spoken}. "
        "Treat them as the caller's answer and respond accordingly."
    )


class DtmfInbox:
    """The caller's keypresses on their way to the agent.

    ``"reply"``: digits gather until ``interdigit_s`` passes without another one; :meth:`due` then hands the run
    over once (for one ``reply.create``). ``"buffer"``: digits wait for :meth:`read` (the ``read_dtmf`` tool).
    ``"off"``: only counted. At most ``INBOX_LIMIT`` digits wait; beyond that the oldest are dropped (counted)."""

    def __init__(self, mode: str, interdigit_s: float = 1.0, limit: int = INBOX_LIMIT) -> None:
        if mode not in DTMF_MODES:
            raise ValueError(f"dtmf_mode must be one of {', '.join(DTMF_MODES)}")
        self.mode = mode
        self.interdigit_s = interdigit_s
        self._digits: deque[str] = deque(maxlen=limit)
        self._last_at: float | None = None
        self.received = 0
        self.dropped = 0
        self.delivered = 0

    def add(self, digit: str, now: float) -> None:
        self.received += 1
        if self.mode == "off":
            return
        if len(self._digits) == self._digits.maxlen:
            self.dropped += 1
        self._digits.append(digit)
        self._last_at = now

    @property
    def pending(self) -> int:
        return len(self._digits)

    def deadline(self) -> float | None:
        """When the gathered run is due (``"reply"`` mode), or None."""
        if self.mode != "reply" or not self._digits or self._last_at is None:
            return None
        return self._last_at + self.interdigit_s

    def due(self, now: float) -> str | None:
        """``"reply"`` mode: the gathered digits once the inter-digit timeout passed (then cleared), else None."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self._take()

    def read(self) -> str:
        """``"buffer"`` mode: everything unread (then cleared)."""
        return self._take() if self.mode == "buffer" else ""

    def _take(self) -> str:
        digits = "".join(self._digits)
        self._digits.clear()
        self._last_at = None
        self.delivered += len(digits)
        return digits
