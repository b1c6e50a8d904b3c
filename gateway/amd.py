"""Answering-machine detection of outbound calls (docs/how-to/conversation.md#voicemail): what ``POST /calls`` adds
to Twilio's create-call request, and what Twilio's asynchronous AMD callback means. Pure.

Twilio's ``MachineDetection=DetectMessageEnd`` with ``AsyncAmd=true`` connects the call at once and runs the
detection in the background; ``AsyncAmdStatusCallback`` is then POSTed (form, signed like every Twilio callback) with
``CallSid`` and ``AnsweredBy``: ``human`` as soon as a person is recognised, or for a machine one of
``machine_end_beep`` / ``machine_end_silence`` / ``machine_end_other`` once its greeting ended (so a message left
then is recorded whole); ``fax``; ``unknown`` when it could not tell. (``machine_start`` is only sent with
``MachineDetection=Enable``, which the gateway does not ask for.)
"""

from __future__ import annotations

import enum

__all__ = [
    "AMD_CALLBACK_PATH",
    "AMD_PARAM",
    "ANSWERED_BY",
    "AmdVerdict",
    "amd_create_form",
    "verdict",
]

#: Where Twilio posts the AMD result (signed like /twilio/status).
AMD_CALLBACK_PATH = "/twilio/amd"
#: The stream ``<Parameter>`` of an outbound call placed with detection (covered by its token like every other).
AMD_PARAM = "amd"
ANSWERED_BY = frozenset(
    {"human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax", "unknown"}
)


class AmdVerdict(enum.Enum):
    HUMAN = "human"  # proceed as any call (also: unknown)
    MACHINE_START = "machine_start"  # a machine, its greeting still playing: keep waiting for its end
    MESSAGE_END = "message_end"  # a machine whose greeting ended (the beep): leave the message now
    FAX = "fax"  # nobody to talk to: hang up


def amd_create_form(callback_url: str) -> list[tuple[str, str]]:
    """The create-call fields that ask Twilio for asynchronous detection that waits for the end of a machine's
    greeting, reported to ``callback_url``."""
    return [
        ("MachineDetection", "DetectMessageEnd"),
        ("AsyncAmd", "true"),
        ("AsyncAmdStatusCallback", callback_url),
        ("AsyncAmdStatusCallbackMethod", "POST"),
    ]


def verdict(answered_by: str) -> AmdVerdict | None:
    """What an ``AnsweredBy`` value means for the call; None for a value Twilio does not document."""
    if answered_by not in ANSWERED_BY:
        return None
    if answered_by in ("human", "unknown"):
        return AmdVerdict.HUMAN
    if answered_by == "machine_start":
        return AmdVerdict.MACHINE_START
    if answered_by == "fax":
        return AmdVerdict.FAX
    return AmdVerdict.MESSAGE_END
