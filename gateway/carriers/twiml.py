"""TwiML documents the webhook returns. Pure."""

from __future__ import annotations

from typing import Mapping
from xml.sax.saxutils import escape, quoteattr

__all__ = ["connect_stream", "say_and_hang_up", "dial"]


def connect_stream(stream_url: str, parameters: Mapping[str, str], status_callback: str | None = None) -> str:
    """``<Connect><Stream>`` (bidirectional). No trailing verb: when our socket closes, the call ends
    (telephony.md §A.7; a trailing <Pause> kept callers on a silent line in pipecat #728). Per-call data travels in
    ``<Parameter>``s because Twilio strips query strings from the stream URL (§A.1)."""
    attrs = f"url={quoteattr(stream_url)}"
    if status_callback:
        attrs += f" statusCallback={quoteattr(status_callback)} statusCallbackMethod=\"POST\""
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items() if v)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream {attrs}>{params}</Stream></Connect></Response>'


def say_and_hang_up(text: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{escape(text)}</Say><Hangup/></Response>'


def dial(destination: str) -> str:
    """Transfer (telephony.md §A.8): the TwiML a REST redirect puts on the live call. ``destination`` is an E.164
    number or a ``sip:``/``sips:`` URI already checked against the allow-list (gateway.tools.call_control); a SIP URI
    needs the ``<Sip>`` noun. Nothing follows ``<Dial>``: when the transferred leg ends, the call ends."""
    if destination.startswith(("sip:", "sips:")):
        target = f"<Sip>{escape(destination)}</Sip>"
    else:
        target = f"<Number>{escape(destination)}</Number>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{target}</Dial></Response>'
