"""Pure parts of the call-control tools (gateway/tools/call_control.py) and of outbound calls (gateway/outbound.py):
transfer destinations and the allow-list, keypad digits, the inbound keypad inbox per dtmf_mode, variables and the
outbound stream token."""

from __future__ import annotations

import json

import pytest

from gateway import outbound
from gateway.security import TokenError, mint_call_token, verify_call_token
from gateway.tools import call_control as cc


# ---- transfer -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,expected",
    [
        ("+15551234567", "+15551234567"),
        ("+1 (555) 123-4567", "+15551234567"),
        (" +44 20 7946 0958 ", "+442079460958"),
        ("sip:desk@pbx.example.com", "sip:desk@pbx.example.com"),
        ("SIP:desk@pbx.example.com:5061;transport=tls", "sip:desk@pbx.example.com:5061;transport=tls"),
    ],
)
def test_destinations_are_normalized(raw, expected):
    assert cc.normalize_destination(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        None,
        15551234567,
        "5551234567",
        "+0123456789",
        "+1555",
        "+1555123456789012",
        "tel:+15551234567",
        "sip:desk",
        "sip:<x>@h",
        "sip:a@b.com</Sip><Play>http://evil</Play>",
        "+1555123<4567",
    ],
)
def test_malformed_destinations_are_refused(raw):
    with pytest.raises(ValueError):
        cc.normalize_destination(raw)


ALLOW = ("+1555*", "sip:*@pbx.example.com", "+442079460958")


@pytest.mark.parametrize(
    "raw,ok",
    [
        ("+15550001111", True),
        ("+1 555 000 2222", True),
        ("+15560001111", False),
        ("+442079460958", True),
        ("+442079460959", False),
        ("sip:billing@pbx.example.com", True),
        ("sip:billing@PBX.Example.com", True),
        ("sip:billing@evil.example.com", False),
        ("sip:x@pbx.example.com.evil.net", False),
    ],
)
def test_only_allow_listed_destinations_pass(raw, ok):
    dest, why = cc.check_destination(raw, ALLOW)
    assert (dest is not None) is ok
    assert (why == "") is ok


def test_empty_allow_list_refuses_everything():
    assert cc.check_destination("+15550001111", ()) == (None, "destination is not on this line's transfer allow-list")


def test_transfer_result_carries_the_announcement_for_the_agent_to_say():
    r = json.loads(cc.transfer_accepted("Connecting you to billing."))
    assert r["ok"] is True and r["instructions"].endswith("Connecting you to billing.")
    assert "transferring" in json.loads(cc.transfer_accepted(None))["instructions"]


def test_destinations_are_masked_for_logs():
    assert cc.mask_destination("+15551234567") == "+1555***4567"
    assert cc.mask_destination("sip:alice@pbx.example.com") == "sip:***@pbx.example.com"


# ---- DTMF -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expected", [("123#", "123#"), ("1, 2, 3", "123"), ("*9-a", "*9A"), ("0", "0")])
def test_digits_are_parsed(raw, expected):
    assert cc.parse_digits(raw) == expected


@pytest.mark.parametrize("raw", ["", " ", "12x", "E", None, 5, "1" * 33, "½"])
def test_bad_digits_are_refused(raw):
    with pytest.raises(ValueError):
        cc.parse_digits(raw)


def test_reply_mode_hands_over_the_run_after_the_inter_digit_timeout():
    box = cc.DtmfInbox("reply", interdigit_s=1.0)
    box.add("1", 10.0)
    box.add("2", 10.5)
    assert box.due(11.4) is None  # 0.9 s after the last digit
    assert box.deadline() == 11.5
    assert box.due(11.5) == "12"
    assert box.due(20.0) is None and box.pending == 0
    box.add("#", 30.0)
    assert box.due(31.0) == "#"
    assert (box.received, box.delivered) == (3, 3)


def test_buffer_mode_keeps_digits_for_read_dtmf():
    box = cc.DtmfInbox("buffer")
    for i, d in enumerate("4711"):
        box.add(d, float(i))
    assert box.due(100.0) is None and box.deadline() is None
    assert box.read() == "4711"
    assert box.read() == ""


def test_off_mode_only_counts():
    box = cc.DtmfInbox("off")
    box.add("9", 0.0)
    assert (box.received, box.pending, box.read(), box.due(99.0)) == (1, 0, "", None)


def test_inbox_is_bounded_oldest_dropped():
    box = cc.DtmfInbox("buffer", limit=4)
    for i, d in enumerate("123456"):
        box.add(d, float(i))
    assert box.read() == "3456" and box.dropped == 2


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        cc.DtmfInbox("loud")


def test_dtmf_instructions_name_every_digit():
    assert "1 2 #" in cc.dtmf_instructions("12#")


@pytest.mark.parametrize("name", sorted(cc.CALL_CONTROL_TOOLS))
def test_declarations_are_flat_function_tools(name):
    d = cc.declaration(name)
    assert d["type"] == "function" and d["name"] == name
    # parameters.properties must be an object (docs/architecture/agent-api.md#session-update)
    assert isinstance(d["parameters"]["properties"], dict)
    d["parameters"]["properties"]["x"] = 1
    assert "x" not in cc.declaration(name)["parameters"]["properties"]  # a copy each time


# ---- variables and outbound calls ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template,expected",
    [
        ("Hello {name}!", "Hello Ada!"),
        ("{name} owes {amount}", "Ada owes 12.50"),
        ("Keep {unknown} and {{name}} and { name } and {", "Keep {unknown} and {Ada} and { name } and {"),
        ("No placeholders", "No placeholders"),
        ("{name}{name}", "AdaAda"),
    ],
)
def test_templates_fill_known_placeholders_only(template, expected):
    assert outbound.fill_template(template, {"name": "Ada", "amount": "12.50"}) == expected


def test_a_value_is_not_itself_expanded():
    assert outbound.fill_template("{a}", {"a": "{b}", "b": "x"}) == "{b}"


PROFILES = ("default", "sales")


def test_outbound_request_is_parsed():
    req = outbound.parse_outbound_request(
        {"to": "+1 555 000 2222", "from": "+15550001111", "profile": "sales", "variables": {"name": "Ada"}},
        PROFILES,
        "default",
    )
    assert req == outbound.OutboundRequest("+15550002222", "+15550001111", "sales", {"name": "Ada"})
    assert (
        outbound.parse_outbound_request({"to": "+15550002222", "from": "+15550001111"}, PROFILES, "default").profile
        == "default"
    )


@pytest.mark.parametrize(
    "body,status",
    [
        ([], 400),
        ({"to": "+15550002222"}, 400),
        ({"to": "+15550002222", "from": "+15550001111", "extra": 1}, 400),
        ({"to": "555", "from": "+15550001111"}, 422),
        ({"to": "+15550002222", "from": "sip:x@y.z"}, 422),
        ({"to": "+15550002222", "from": "+15550001111", "profile": "nope"}, 422),
        ({"to": "+15550002222", "from": "+15550001111", "variables": ["a"]}, 400),
        ({"to": "+15550002222", "from": "+15550001111", "variables": {"a": 1}}, 400),
        ({"to": "+15550002222", "from": "+15550001111", "variables": {"1a": "x"}}, 422),
        ({"to": "+15550002222", "from": "+15550001111", "variables": {"bio": "x" * 497}}, 422),
        ({"to": "+15550002222", "from": "+15550001111", "variables": {f"v{i}": "x" for i in range(33)}}, 422),
    ],
)
def test_bad_outbound_requests_are_refused_with_the_right_status(body, status):
    with pytest.raises(outbound.RequestInvalid) as err:
        outbound.parse_outbound_request(body, PROFILES, "default")
    assert err.value.status == status


def test_the_parameter_limit_is_name_plus_value():
    ok = {"bio": "x" * (500 - len("var_bio"))}
    outbound.parse_outbound_request(
        {"to": "+15550002222", "from": "+15550001111", "variables": ok}, PROFILES, "default"
    )
    too_long = {"bio": "x" * (501 - len("var_bio"))}
    with pytest.raises(outbound.RequestInvalid, match="bio"):
        outbound.parse_outbound_request(
            {"to": "+15550002222", "from": "+15550001111", "variables": too_long}, PROFILES, "default"
        )


def test_outbound_token_binds_every_parameter():
    req = outbound.OutboundRequest("+15550002222", "+15550001111", "sales", {"name": "Ada"})
    params = outbound.outbound_parameters("ob_1", req)
    assert params == {
        "outbound": "ob_1",
        "profile": "sales",
        "to": "+15550002222",
        "from": "+15550001111",
        "var_name": "Ada",
    }
    token = mint_call_token(b"k", outbound.token_subject(params, "", "sales"), 1000.0, 300, scope="twilio")
    received = {**params, "token": token}  # what arrives in start.customParameters
    # any CallSid (an outbound token is minted before Twilio names the call)
    verify_call_token(b"k", token, outbound.token_subject(received, "CA" + "1" * 32, "sales"), 1001.0, scope="twilio")
    for tampered in (
        {**received, "var_name": "Eve"},
        {**received, "profile": "default"},
        {**received, "var_extra": "1"},
        {**received, "outbound": "ob_2"},
    ):
        with pytest.raises(TokenError):
            verify_call_token(
                b"k", token, outbound.token_subject(tampered, "CA" + "1" * 32, "sales"), 1001.0, scope="twilio"
            )
    with pytest.raises(TokenError):  # the same token at another carrier's door
        verify_call_token(
            b"k", token, outbound.token_subject(received, "CA" + "1" * 32, "sales"), 1001.0, scope="telnyx"
        )


def test_webhook_tokens_stay_bound_to_the_call_sid_and_profile():
    assert outbound.token_subject({"token": "t", "from": "+1", "to": "+2"}, "CA9", "sales") == "CA9|sales"
    assert outbound.variables_from_parameters({"var_a": "1", "token": "t", "variable": "x"}) == {"a": "1"}
