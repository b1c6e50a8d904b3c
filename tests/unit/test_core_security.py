"""Who may connect (gateway/security.py): Twilio request signatures
(docs/architecture/twilio-media-streams.md#signatures) and per-call stream tokens.

Signatures are checked against Twilio's published examples and against an independent HMAC-SHA1 reference written
here from the documented algorithm (URL, then every POST parameter sorted by name as name+value, no separators).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from gateway.security import (
    TokenError,
    mint_call_token,
    twilio_signature,
    validate_twilio_signature,
    verify_call_token,
)

# ---- Twilio request signatures -------------------------------------------------------------------------------------
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
# The worked example of Twilio's "Webhooks security" page.
PUBLISHED = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
# The same example with other numbers, as printed in twilio-php's validation guide.
PARAMS_PHP = {**PARAMS, "Caller": "+14158675309", "From": "+14158675309"}
PUBLISHED_PHP = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def reference_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Written from the documented algorithm, independently of gateway.security."""
    data = url
    for name in sorted({n for n, _ in params}):
        for value in sorted(v for n, v in params if n == name):
            data += name + value
    return base64.b64encode(hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()).decode()


def test_reference_implementation_reproduces_twilios_published_examples() -> None:
    assert reference_signature(TOKEN, URL, list(PARAMS.items())) == PUBLISHED
    assert reference_signature(TOKEN, URL, list(PARAMS_PHP.items())) == PUBLISHED_PHP


@pytest.mark.parametrize(("params", "expected"), [(PARAMS, PUBLISHED), (PARAMS_PHP, PUBLISHED_PHP)])
def test_signature_matches_twilios_published_examples(params: dict[str, str], expected: str) -> None:
    assert twilio_signature(TOKEN, URL, params) == expected
    assert validate_twilio_signature(TOKEN, URL, params, expected)


VECTORS = [
    ("no_params", "wss://voice.example.com/media", []),
    ("unicode", "https://voice.example.com/voice", [("SpeechResult", "¿Qué tal? 你好"), ("From", "+4930123")]),
    ("empty_value", "https://voice.example.com/voice", [("Digits", ""), ("CallSid", "CA1")]),
    ("case_sorts_upper_first", "https://h.example/x", [("b", "1"), ("B", "2"), ("a", "3"), ("A", "4")]),
    ("query_kept_as_is", "https://h.example/x?z=1&a=2", [("To", "+1")]),
    ("separators_in_values", "https://h.example/x", [("a", "b=c&d"), ("ab", "")]),
]


@pytest.mark.parametrize(("url", "params"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_signature_matches_independent_reference(url: str, params: list[tuple[str, str]]) -> None:
    expected = reference_signature("a-token", url, params)
    assert twilio_signature("a-token", url, dict(params)) == expected
    assert validate_twilio_signature("a-token", url, dict(params), expected)


def test_repeated_params_are_signed_in_sorted_value_order() -> None:
    params = [("To", "+1"), ("Choice", "b"), ("Choice", "a"), ("Choice", "c")]
    expected = reference_signature(TOKEN, URL, params)
    for order in (["b", "a", "c"], ["c", "b", "a"], ("a", "b", "c")):
        assert twilio_signature(TOKEN, URL, {"To": "+1", "Choice": order}) == expected
        assert validate_twilio_signature(TOKEN, URL, {"To": "+1", "Choice": list(order)}, expected)


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", URL),  # Twilio signed with the port, we see none
        (URL, "https://mycompany.com:443/myapp.php?foo=1&bar=2"),  # and the other way round
        ("wss://voice.example.com:443/media", "wss://voice.example.com/media"),
        ("wss://voice.example.com/media", "wss://voice.example.com:443/media"),
        ("http://voice.example.com:80/voice", "http://voice.example.com/voice"),
        ("http://voice.example.com/voice", "http://voice.example.com:80/voice"),
    ],
)
def test_default_port_may_be_present_or_absent(signed_url: str, checked_url: str) -> None:
    sig = reference_signature(TOKEN, signed_url, list(PARAMS.items()))
    assert validate_twilio_signature(TOKEN, checked_url, PARAMS, sig)


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        ("https://mycompany.com:8443/myapp.php?foo=1&bar=2", URL),  # a non-default port is part of the URL
        (URL, "https://mycompany.com:8443/myapp.php?foo=1&bar=2"),
        ("https://mycompany.com:80/myapp.php?foo=1&bar=2", URL),  # 80 is not https's default
        # scheme matters (wss vs https, docs/architecture/twilio-media-streams.md#signatures)
        ("http://mycompany.com/myapp.php?foo=1&bar=2", URL),
        ("https://mycompany.com/myapp.php?foo=1&bar=3", URL),
        ("https://mycompany.com/myapp.php", URL),
        ("https://evil.example/myapp.php?foo=1&bar=2", URL),
    ],
)
def test_signature_over_another_url_is_rejected(signed_url: str, checked_url: str) -> None:
    sig = reference_signature(TOKEN, signed_url, list(PARAMS.items()))
    assert not validate_twilio_signature(TOKEN, checked_url, PARAMS, sig)


@pytest.mark.parametrize(
    ("token", "params", "signature"),
    [
        ("54321", PARAMS, PUBLISHED),  # wrong auth token
        ("", PARAMS, PUBLISHED),  # no auth token configured
        (TOKEN, PARAMS, None),  # header missing
        (TOKEN, PARAMS, ""),  # header empty
        (TOKEN, PARAMS, PUBLISHED[:-1]),  # truncated
        (TOKEN, PARAMS, PUBLISHED.lower()),
        (TOKEN, {**PARAMS, "Digits": "9999"}, PUBLISHED),  # tampered parameter
        (TOKEN, {**PARAMS, "Extra": "1"}, PUBLISHED),  # added parameter
        (TOKEN, {k: v for k, v in PARAMS.items() if k != "To"}, PUBLISHED),  # dropped parameter
        (TOKEN, {}, PUBLISHED),
    ],
    ids=[
        "wrong_token",
        "no_token",
        "missing_header",
        "empty_header",
        "truncated",
        "lower_cased",
        "tampered",
        "added_param",
        "dropped_param",
        "no_params",
    ],
)
def test_invalid_signatures_are_rejected(token: str, params: dict[str, str], signature: str | None) -> None:
    assert not validate_twilio_signature(token, URL, params, signature)


def test_websocket_upgrade_is_signed_over_the_wss_url_with_no_params() -> None:
    url = "wss://voice.example.com/media"
    sig = reference_signature(TOKEN, url, [])
    assert validate_twilio_signature(TOKEN, url, {}, sig)
    assert not validate_twilio_signature(TOKEN, "https://voice.example.com/media", {}, sig)


# ---- per-call tokens ---------------------------------------------------------------------------------------------
SECRET = b"test-secret"
CALL = "CA3c6cd4b6aab2d2b1f3d5c7c9e1f0a2b4"
NOW = 1_790_000_000.0
TTL = 300.0


def test_call_token_looks_like_v2_expiry_mac() -> None:
    token = mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio")
    m = re.fullmatch(r"v2\.(\d+)\.([A-Za-z0-9_-]{11})\.([A-Za-z0-9_-]+)", token)
    assert m is not None
    assert int(m.group(1)) == int(NOW + TTL)
    assert len(m.group(3)) == 43  # an unpadded url-safe base64 SHA-256 MAC
    assert "=" not in token  # safe to put in a TwiML <Parameter> without escaping


def test_call_token_is_deterministic_for_its_nonce_and_bound_to_call_and_secret() -> None:
    token = mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio", nonce="n0nce")
    assert mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio", nonce="n0nce") == token
    assert mint_call_token(SECRET, "CA" + "0" * 32, NOW, TTL, scope="twilio", nonce="n0nce") != token
    assert mint_call_token(b"other", CALL, NOW, TTL, scope="twilio", nonce="n0nce") != token


def test_every_token_minted_is_unique_even_for_the_same_call_and_second() -> None:
    tokens = {mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio") for _ in range(1000)}
    assert len(tokens) == 1000  # a spent token never equals the next one for the same call (re-attach)
    for t in tokens:
        verify_call_token(SECRET, t, CALL, NOW, scope="twilio")


@pytest.mark.parametrize("at", [NOW, NOW + 1, NOW + TTL - 1, NOW + TTL])
def test_valid_call_token_verifies_until_it_expires(at: float) -> None:
    verify_call_token(
        SECRET, mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio"), CALL, at, scope="twilio"
    )  # raises if not


def _forged_expiry(token: str) -> str:
    _, expiry, nonce, mac = token.split(".")
    return f"v2.{int(expiry) + 3600}.{nonce}.{mac}"


@pytest.mark.parametrize(
    ("token", "call_sid", "secret", "now", "reason"),
    [
        (mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio"), CALL, SECRET, NOW + TTL + 1, "expired"),
        (mint_call_token(SECRET, CALL, NOW - 3600, TTL, scope="twilio"), CALL, SECRET, NOW, "expired"),
        (mint_call_token(SECRET, "CAother", NOW, TTL, scope="twilio"), CALL, SECRET, NOW, "other call"),
        (mint_call_token(b"wrong", CALL, NOW, TTL, scope="twilio"), CALL, SECRET, NOW, "signature"),
        (_forged_expiry(mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio")), CALL, SECRET, NOW, "signature"),
        (mint_call_token(SECRET, CALL, NOW, TTL, scope="twilio")[:-1], CALL, SECRET, NOW, "signature"),
        (None, CALL, SECRET, NOW, "missing"),
        ("", CALL, SECRET, NOW, "missing"),
        ("garbage", CALL, SECRET, NOW, "malformed"),
        ("v2.123.abc", CALL, SECRET, NOW, "malformed"),
        ("v2.123.abc.def.ghi", CALL, SECRET, NOW, "malformed"),
        ("v1.1790000300.n.abc", CALL, SECRET, NOW, "malformed"),
        ("v2.-5.n.abc", CALL, SECRET, NOW, "malformed"),
        ("v2..n.abc", CALL, SECRET, NOW, "malformed"),
        ("v2.soon.n.abc", CALL, SECRET, NOW, "malformed"),
        ("v2.1790000300..abc", CALL, SECRET, NOW, "malformed"),
        ("v2.1790000300.n|x.abc", CALL, SECRET, NOW, "malformed"),
        # Bug: str.isdigit() accepts superscript digits that int() rejects, so a ValueError (not a TokenError)
        # escapes, and the session's `except TokenError` does not catch it.
        ("v2.².n.abc", CALL, SECRET, NOW, "malformed"),
        ("v2.1790000300².n.abc", CALL, SECRET, NOW, "malformed"),
    ],
    ids=[
        "expired",
        "long_expired",
        "other_call_sid",
        "wrong_secret",
        "forged_expiry",
        "truncated_mac",
        "none",
        "empty",
        "garbage",
        "three_parts",
        "five_parts",
        "other_version",
        "negative_expiry",
        "empty_expiry",
        "word_expiry",
        "empty_nonce",
        "bad_nonce",
        "superscript_expiry",
        "trailing_superscript",
    ],
)
def test_bad_call_tokens_raise_token_error_saying_why(
    token: str | None, call_sid: str, secret: bytes, now: float, reason: str
) -> None:
    with pytest.raises(TokenError) as info:
        verify_call_token(secret, token, call_sid, now, scope="twilio")
    assert reason in str(info.value)


def test_a_token_is_refused_at_any_door_but_the_one_that_minted_it() -> None:
    token = mint_call_token(SECRET, CALL, NOW, TTL, scope="signalwire")
    verify_call_token(SECRET, token, CALL, NOW, scope="signalwire")
    for door in ("twilio", "telnyx", "plivo", "vonage", "exotel", "softphone"):
        with pytest.raises(TokenError, match="carrier"):
            verify_call_token(SECRET, token, CALL, NOW, scope=door)


def test_a_token_is_bound_to_the_profile_it_was_answered_with() -> None:
    token = mint_call_token(SECRET, f"{CALL}|default", NOW, TTL, scope="twilio")
    with pytest.raises(TokenError, match="profile"):
        verify_call_token(SECRET, token, f"{CALL}|vip", NOW, scope="twilio")


@pytest.mark.parametrize(
    "token",
    [
        "v2." + "9" * 5000 + ".abc.AAAA",  # int() refuses over 4,300 digits: ValueError, not TokenError
        "MAC\ud800",  # a lone surrogate (json.loads makes one from "\\ud800"): it cannot even be encoded
    ],
    ids=["expiry-of-5000-digits", "lone-surrogate"],
)
def test_every_malformed_token_is_a_token_error(token: str) -> None:
    """A stream's start is authorized before anything else of it is trusted, and authorize catches TokenError only:
    anything else a visitor's token raised would end the stream as an internal error, not a refusal."""
    secret = b"s" * 32
    if token.startswith("MAC"):
        token = mint_call_token(secret, "CA1|default", 0.0, 300, scope="twilio")[:-1] + token[3:]
    with pytest.raises(TokenError):
        verify_call_token(secret, token, "CA1|default", 0.0, scope="twilio")
