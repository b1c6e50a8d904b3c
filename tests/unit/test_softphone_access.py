"""The softphone's access rules, pure part (gateway.softphone.access): which key an Authorization header presents,
the constant-time comparison, origin serialization and the cross-site decision. Table-driven, no I/O."""

from __future__ import annotations

import base64

import pytest

from gateway.softphone import access
from gateway.softphone.access import cross_site, key_matches, origin_of, presented_key


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("", None),
        (basic("operator:s3cret"), "s3cret"),
        (basic(":s3cret"), "s3cret"),  # any user name, even none
        (basic("operator:pa:ss"), "pa:ss"),  # the password may hold colons (RFC 7617 §2)
        (basic("s3cret"), None),  # no colon: a user name alone is no password
        (basic("s3cret:"), None),
        ("basic " + base64.b64encode(b"u:k").decode(), "k"),  # the scheme is case-insensitive
        ("Basic not*base64", None),
        ("Basic " + base64.b64encode(b"u:\xff").decode(), None),  # not UTF-8
        ("Bearer s3cret", "s3cret"),
        ("bearer   s3cret  ", "s3cret"),
        ("Bearer", None),
        ("Digest username=x", None),
        ("s3cret", None),
    ],
)
def test_presented_key(header, key):
    assert presented_key(header) == key


def test_key_matches_only_the_exact_key():
    assert key_matches("s3cret", "s3cret")
    for wrong in ("s3cre", "s3cret ", "S3CRET", "", None):
        assert not key_matches(wrong, "s3cret")
    assert not key_matches("", "")  # no configured key never matches
    assert not key_matches(None, "")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://voice.example.com", "https://voice.example.com"),
        ("https://Voice.Example.com:443/base/", "https://voice.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:80", "http://localhost"),
        ("https://voice.example.com:8443", "https://voice.example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("HTTP://EXAMPLE.COM", "http://example.com"),
        ("null", None),
        ("file:///tmp/x.html", None),
        ("https://", None),
        ("http://h:99999", None),
        ("http://h:port", None),
    ],
)
def test_origin_of(url, origin):
    assert origin_of(url) == origin


OWN = "https://voice.example.com"


@pytest.mark.parametrize(
    ("origin", "fetch_site", "refused"),
    [
        (None, None, False),  # curl, scripts
        (OWN, None, False),
        (OWN + ":443", "same-origin", False),
        (None, "same-origin", False),
        (None, "none", False),  # typed into the address bar
        (None, "cross-site", True),
        (OWN, "Cross-Site", True),  # the browser's word wins
        ("https://evil.example", None, True),
        ("https://evil.example", "same-site", True),  # a sibling subdomain is another origin
        ("http://voice.example.com", None, True),  # other scheme
        ("https://voice.example.com:8443", None, True),  # other port
        ("null", None, True),  # sandboxed frames, file:// pages
    ],
)
def test_cross_site(origin, fetch_site, refused):
    assert cross_site(origin, fetch_site, OWN) is refused


def test_an_unknown_own_origin_refuses_any_origin_header():
    assert cross_site(OWN, None, None)
    assert not cross_site(None, None, None)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("10.0.0.5", True),
        ("phone.localhost:8080", True),
        ("evil.example:8080", False),
        ("localhost.evil.example", False),
        ("", False),
        ("exa mple", False),
    ],
)
def test_local_host_names_only_addresses_and_localhost(host, local):
    assert access.local_host(host) is local
