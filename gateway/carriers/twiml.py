"""TwiML documents the webhook returns. Pure."""

from __future__ import annotations

from typing import Mapping
from xml.sax.saxutils import escape, quoteattr

__all__ = ["connect_stream", "say_and_hang_up"]


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
