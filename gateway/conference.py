"""Warm transfer over Twilio (docs/how-to/conversation.md#warm-transfer): the TwiML of the human's leg and of the
caller's join, and what Twilio's callbacks about the human's leg mean. Pure.

The caller stays with the agent (hearing hold audio) while the human is dialled with the Calls API. The human's leg
runs :func:`whisper_twiml`: ``<Say>`` the whisper (the agent's summary, heard by the human only), then
``<Dial><Conference>`` into a room named after the caller's call, whose ``statusCallback`` reports the human's
``participant-join``. Only then is the caller's call redirected into that room (:func:`join_twiml`), so the whisper
is over before the two are joined. The human's call status callbacks (``CallStatus``) report the other endings:
``busy``, ``no-answer`` (Twilio gives up after the create-call ``Timeout``), ``failed``, ``canceled``, or
``completed`` before joining; each returns the caller to the agent, which is told why.
"""

from __future__ import annotations

from .carriers.twiml import xml_attr, xml_text

__all__ = [
    "RESULTS",
    "WARM_CALLBACK_PATH",
    "failed_instructions",
    "join_twiml",
    "room_name",
    "transfer_result",
    "whisper_text",
    "whisper_twiml",
]

#: Twilio posts the human leg's call status and its conference's participant events here (signed).
WARM_CALLBACK_PATH = "/twilio/transfer"
#: What a warm transfer can come to.
RESULTS = ("answered", "busy", "no-answer", "failed", "canceled")
_MAX_WHISPER = 1000


def room_name(caller_sid: str) -> str:
    return f"warm-{caller_sid}"


def whisper_text(prefix: str, summary: str) -> str:
    text = " ".join(part.strip() for part in (prefix, summary) if part.strip())
    return text[:_MAX_WHISPER]


def whisper_twiml(whisper: str, room: str, callback_url: str) -> str:
    """The human's leg: the whisper, then the room (started by the human; it ends when the human leaves)."""
    say = f"<Say>{xml_text(whisper)}</Say>" if whisper else ""
    conference = (
        f'<Conference startConferenceOnEnter="true" endConferenceOnExit="true" beep="false" '
        f'statusCallback={xml_attr(callback_url)} statusCallbackEvent="join">{xml_text(room)}</Conference>'
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{say}<Dial>{conference}</Dial></Response>'


def join_twiml(room: str) -> str:
    """The caller's call, redirected into the room once the human is in it."""
    attrs = 'startConferenceOnEnter="true" endConferenceOnExit="true" beep="false"'
    conference = f"<Conference {attrs}>{xml_text(room)}</Conference>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{conference}</Dial></Response>'


def transfer_result(call_status: str, conference_event: str, joined: bool) -> str | None:
    """A callback about the human's leg → the transfer's result, or None (nothing decided yet: initiated, ringing,
    answered while the whisper plays, or an event after the join)."""
    if conference_event == "participant-join":
        return None if joined else "answered"
    if joined:
        return None
    if call_status in ("busy", "no-answer", "failed", "canceled"):
        return call_status
    if call_status == "completed":
        return "failed"  # the human hung up before joining (during the whisper)
    return None


def failed_instructions(result: str) -> str:
    """What the agent is told when the caller is back with it."""
    why = {
        "busy": "the line was busy",
        "no-answer": "nobody answered",
        "canceled": "the call was cancelled",
    }.get(result, "the call could not be connected")
    return f"The transfer did not go through: {why}. Tell the caller, and offer other help."
