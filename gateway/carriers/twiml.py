"""TwiML documents the webhook returns, and the XML escaping every carrier's answer document uses. Pure.

Whatever we put into a TwiML / cXML / TeXML / Plivo XML document, attribute or text, goes through :func:`xml_attr`
or :func:`xml_text`, which first drop what XML 1.0 cannot carry at all (:func:`xml_safe`). A ``From`` of
``"+1555\\x00"`` (carriers pass caller-supplied SIP headers through) must not make our answer unparseable: the
carrier would fail the call, and a lone surrogate would not even encode to UTF-8 (docs/security.md,
"Malformed input").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

__all__ = ["connect_stream", "dial", "parameters_xml", "say_and_hang_up", "xml_attr", "xml_safe", "xml_text"]

#: Everything outside XML 1.0's ``Char`` production (XML 1.0 §2.2): C0 controls but tab, LF and CR; lone
#: surrogates (a Python str may hold them, UTF-8 cannot); U+FFFE and U+FFFF. Character references cannot carry them
#: either (§4.1, well-formedness constraint "Legal Character"), so they can only be dropped.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot represent; everything else unchanged."""
    return _NOT_XML_CHAR.sub("", text)


def xml_attr(value: str) -> str:
    """A quoted attribute value (quotes included) that parses back to ``xml_safe(value)``: tab, LF and CR become
    character references, which attribute-value normalization (§3.3.3) would otherwise turn into spaces."""
    return quoteattr(xml_safe(value))


def xml_text(value: str) -> str:
    """Element content that parses back to ``xml_safe(value)``: CR becomes ``&#13;``, which end-of-line handling
    (§2.11) would otherwise turn into LF."""
    return escape(xml_safe(value), {"\r": "&#13;"})


def parameters_xml(parameters: Mapping[str, str]) -> str:
    """``<Parameter name value/>`` per non-empty value (after :func:`xml_safe`: a value that was only illegal
    characters is as absent as an empty one, and Twilio sends no empty parameter either)."""
    return "".join(f"<Parameter name={xml_attr(k)} value={xml_attr(v)}/>" for k, v in parameters.items() if xml_safe(v))


def connect_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    status_callback: str | None = None,
    *,
    attributes: Mapping[str, str] | None = None,
) -> str:
    """``<Connect><Stream>`` (bidirectional), the one builder behind Twilio's TwiML, SignalWire's cXML and Telnyx's
    TeXML (``attributes``: the dialect's own, after ``url``). No trailing verb: when our socket closes, the call ends
    (a trailing <Pause> kept callers on a silent line in pipecat #728). Per-call data travels in ``<Parameter>``s
    because Twilio strips query strings from the stream URL (docs/architecture/twilio-media-streams.md#twiml)."""
    attrs = f"url={xml_attr(stream_url)}"
    for name, value in (attributes or {}).items():
        attrs += f" {name}={xml_attr(value)}"
    if status_callback:
        attrs += f' statusCallback={xml_attr(status_callback)} statusCallbackMethod="POST"'
    params = parameters_xml(parameters)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream {attrs}>{params}</Stream></Connect>'
        "</Response>"
    )


def say_and_hang_up(text: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{xml_text(text)}</Say><Hangup/></Response>'


def dial(destination: str) -> str:
    """Transfer (docs/how-to/call-control.md): the TwiML a REST redirect puts on the live call. ``destination`` is an
    E.164 number or a ``sip:``/``sips:`` URI already checked against the allow-list (gateway.tools.call_control); a SIP
    URI needs the ``<Sip>`` noun. Nothing follows ``<Dial>``: when the transferred leg ends, the call ends."""
    if destination.startswith(("sip:", "sips:")):
        target = f"<Sip>{xml_text(destination)}</Sip>"
    else:
        target = f"<Number>{xml_text(destination)}</Number>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{target}</Dial></Response>'
