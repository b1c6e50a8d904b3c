"""The pure checks behind ``POST /calls`` (gateway/outbound.py): the destination allow-list (``[twilio]
dial_allow``) and the refusal of text XML cannot carry (docs/security.md)."""

from __future__ import annotations

import pytest

from gateway.outbound import RequestInvalid, dial_allowed, parse_outbound_request

PATTERNS = ("+1555*", "sip:*@pbx.example.com", "client:agent_*")


@pytest.mark.parametrize(
    "to,patterns,allowed",
    [
        ("+15550002222", (), True),  # no list: any E.164 number …
        ("+447700900123", (), True),
        ("sip:alice@pbx.example.com", (), False),  # … and nothing else
        ("sips:alice@pbx.example.com", (), False),
        ("client:bob", (), False),
        ("+15550002222", PATTERNS, True),
        ("+15560002222", PATTERNS, False),
        ("+447700900123", PATTERNS, False),
        ("sip:alice@pbx.example.com", PATTERNS, True),
        ("sip:Alice@PBX.example.com", PATTERNS, True),  # SIP compared lower-cased, as transfer_allow
        ("sip:alice@pbx.example.com.evil.net", PATTERNS, False),
        ("sips:alice@pbx.example.com", PATTERNS, False),  # sips: needs its own pattern
        ("client:agent_7", PATTERNS, True),
        ("client:bob", PATTERNS, False),
        ("client:Agent_7", PATTERNS, False),  # client names are case-sensitive
    ],
)
def test_dial_allowed(to: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert dial_allowed(to, patterns) is allowed


@pytest.mark.parametrize(
    "body",
    [
        {"to": "+15550002222", "from": "+15550001111", "variables": {"name": "Ada\x00"}},
        {"to": "+15550002222", "from": "+15550001111", "variables": {"name": "\udc80"}},
        {"to": "+15550002222", "from": "+15550001111", "variables": {"name": "\uffff"}},
    ],
)
def test_text_xml_cannot_carry_is_refused_with_422(body: dict[str, object]) -> None:
    with pytest.raises(RequestInvalid) as err:
        parse_outbound_request(body, {"default"}, "default")
    assert err.value.status == 422 and "XML" in str(err.value)


def test_tabs_and_newlines_in_a_variable_are_text_xml_carries() -> None:
    req = parse_outbound_request(
        {"to": "+15550002222", "from": "+15550001111", "variables": {"note": "line 1\r\nline\t2"}},
        {"default"},
        "default",
    )
    assert req.variables == {"note": "line 1\r\nline\t2"}


@pytest.mark.parametrize(
    "to",
    [
        "sip:alice@evil.example.com?x=@pbx.example.com",  # would match "sip:*@pbx.example.com"; its host is evil
        "sip:alice@evil.example.com;x=@pbx.example.com",
        "sip:a\x1bice@pbx.example.com",
        "sip:@pbx.example.com",
        "sip:alice@pbx.example.com:99999x",
    ],
)
def test_sip_destinations_are_user_at_host_only(to: str) -> None:
    with pytest.raises(RequestInvalid) as err:
        parse_outbound_request({"to": to, "from": "+15550001111"}, {"default"}, "default")
    assert err.value.status == 422 and "sip: URI" in str(err.value)


@pytest.mark.parametrize("to", ["sip:alice@pbx.example.com", "sips:+15550002222@pbx.example.com:5061;transport=tls"])
def test_plain_sip_uris_still_parse(to: str) -> None:
    assert parse_outbound_request({"to": to, "from": "+15550001111"}, {"default"}, "default").to == to
