"""Every answer document we build (TwiML, SignalWire cXML, Telnyx TeXML, Plivo XML) parses whatever text goes into
it: characters XML 1.0 cannot carry (C0 controls, U+FFFE/U+FFFF, lone surrogates) are dropped, everything else comes
back exactly, CR, tab and markup characters included (gateway.carriers.twiml.xml_safe, docs/security.md)."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.carriers import plivo, signalwire, telnyx, twiml
from gateway.carriers.twiml import xml_safe

ILLEGAL = [
    "\x00",
    "\x01",
    "\x08",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x1f",
    "\ufffe",
    "\uffff",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
]
#: Any character, with the troublesome ones (illegal, line ends, markup) drawn often.
CHARS = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(categories=("Cs",)),  # lone surrogates: st.characters() never draws them on its own
    st.sampled_from(
        [
            *ILLEGAL,
            "\t",
            "\n",
            "\r",
            "&",
            "<",
            ">",
            '"',
            "'",
            "]]>",
            "\U0001f600",
            "\ud7ff",
            "\ue000",
            "\ufffd",
            "\U0010ffff",
        ]
    ),
)
TEXT = st.lists(CHARS, max_size=30).map("".join)


def legal(ch: str) -> bool:
    """XML 1.0 §2.2 ``Char``, written out independently of the regular expression under test."""
    c = ord(ch)
    return c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF


def parse(document: str) -> ElementTree.Element:
    """What the carrier does: the UTF-8 bytes of the answer, parsed (a lone surrogate would already fail to encode)."""
    return ElementTree.fromstring(document.encode("utf-8"))


# ---- xml_safe -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ch", ILLEGAL)
def test_xml_safe_drops_each_illegal_character(ch: str) -> None:
    assert xml_safe(f"+1555{ch}0100") == "+15550100"


def test_xml_safe_keeps_tab_line_ends_and_the_edges_of_the_legal_ranges() -> None:
    text = "\t\n\r \ud7ff\ue000\ufffd\U00010000\U0010ffff"
    assert xml_safe(text) == text


@settings(max_examples=500, deadline=None)
@given(text=TEXT)
def test_xml_safe_removes_exactly_the_characters_outside_xml_char(text: str) -> None:
    safe = xml_safe(text)
    assert safe == "".join(ch for ch in text if legal(ch))
    assert xml_safe(safe) == safe


# ---- every builder, any text in ----------------------------------------------------------------------------------
def params_of(stream: ElementTree.Element | None) -> dict[str, str]:
    assert stream is not None
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def expected_params(params: dict[str, str]) -> dict[str, str]:
    return {xml_safe(k): xml_safe(v) for k, v in params.items() if xml_safe(v)}


@settings(max_examples=300, deadline=None)
@given(url=TEXT, from_=TEXT, to=TEXT, name=TEXT, callback=TEXT)
def test_twiml_connect_stream_parses_and_round_trips(url: str, from_: str, to: str, name: str, callback: str) -> None:
    params = {"token": "v2.abc", "from": from_, "to": to, "var_" + name: to}
    doc = parse(twiml.connect_stream(url, params, callback or None))
    stream = doc.find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == xml_safe(url)
    assert stream.attrib.get("statusCallback", "") == xml_safe(callback)
    assert params_of(stream) == expected_params(params)


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_twiml_say_and_dial_parse_and_round_trip(text: str) -> None:
    say = parse(twiml.say_and_hang_up(text)).find("Say")
    assert say is not None and (say.text or "") == xml_safe(text)
    for dest in ("+1555" + text, "sip:" + text):
        dial = parse(twiml.dial(dest)).find("Dial")
        assert dial is not None and len(dial) == 1 and (dial[0].text or "") == xml_safe(dest)


@settings(max_examples=200, deadline=None)
@given(url=TEXT, from_=TEXT, to=TEXT, callback=TEXT)
def test_signalwire_cxml_parses_and_round_trips(url: str, from_: str, to: str, callback: str) -> None:
    params = {"token": "v2.abc", "from": from_, "to": to}
    stream = parse(signalwire.connect_stream(url, params, "L16@24000h", callback or None)).find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == xml_safe(url) and stream.attrib["codec"] == "L16@24000h"
    assert stream.attrib.get("statusCallback", "") == xml_safe(callback)
    assert params_of(stream) == expected_params(params)


@settings(max_examples=200, deadline=None)
@given(url=TEXT, from_=TEXT, to=TEXT, callback=TEXT)
def test_telnyx_texml_parses_and_round_trips(url: str, from_: str, to: str, callback: str) -> None:
    params = {"token": "v2.abc", "from": from_, "to": to}
    stream = parse(telnyx.texml_stream(url, params, "PCMA", 8000, callback or None)).find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == xml_safe(url)
    assert stream.attrib.get("statusCallback", "") == xml_safe(callback)
    assert params_of(stream) == expected_params(params)


@settings(max_examples=200, deadline=None)
@given(url=TEXT, noise=st.lists(st.sampled_from(ILLEGAL), max_size=4).map("".join), callback=TEXT)
def test_plivo_xml_parses_and_round_trips(url: str, noise: str, callback: str) -> None:
    # extraHeaders take alphanumerics only (Plivo's rule, checked by stream_xml); illegal characters are dropped
    # before that check, as everywhere else.
    body = plivo.stream_xml(
        url, "audio/x-mulaw;rate=8000", {"to": "+1555" + noise + "0100", "from": noise + "42"}, callback or None
    )
    stream = parse(body)
    assert stream.tag == "Response"
    (element,) = stream
    assert (element.text or "") == xml_safe(url)
    assert element.attrib["extraHeaders"] == "to=15550100,from=42"
    assert element.attrib.get("statusCallbackUrl", "") == xml_safe(callback)


@pytest.mark.parametrize(
    "build",
    [
        lambda p: twiml.connect_stream("wss://gw.example.com/twilio/stream", p),
        lambda p: signalwire.connect_stream("wss://gw.example.com/signalwire/stream", p),
        lambda p: telnyx.texml_stream("wss://gw.example.com/telnyx/stream", p),
    ],
)
def test_a_from_of_only_illegal_characters_is_left_out_like_an_empty_one(build) -> None:
    stream = parse(build({"token": "t", "from": "\x00\ufffe", "to": "+15550100"})).find("./Connect/Stream")
    assert params_of(stream) == {"token": "t", "to": "+15550100"}
