"""Every URL the gateway writes or signs (gateway/urls.py): one address rule for IPv4 and IPv6, unspecified
addresses reached on loopback, public URLs kept as configured (path prefix, port), never a request header but the
documented development fallback of :func:`webhook_url`."""

from __future__ import annotations

import pytest

from gateway import urls


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5"),
        ("0.0.0.0", "127.0.0.1"),  # unspecified: this machine's loopback
        ("", "127.0.0.1"),
        (None, "127.0.0.1"),
        ("::", "[::1]"),  # unspecified IPv6: IPv6 loopback
        ("::1", "[::1]"),
        ("2001:db8::7", "[2001:db8::7]"),
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4 peer on a dual-stack socket: written as IPv4
        ("fe80::1%eth0", "[fe80::1%25eth0]"),  # a zone is percent-encoded (RFC 6874)
        ("localhost", "localhost"),
    ],
)
def test_an_address_is_written_as_a_url_host_by_one_rule(address, host):
    assert urls.host_for_url(address) == host


@pytest.mark.parametrize(
    ("sockname", "expected"),
    [
        (("127.0.0.1", 41234), "ws://127.0.0.1:41234/twilio/stream"),
        (("0.0.0.0", 8080), "ws://127.0.0.1:8080/twilio/stream"),
        (("::1", 8080, 0, 0), "ws://[::1]:8080/twilio/stream"),  # AF_INET6 socknames have four fields
        (("::", 8080, 0, 0), "ws://[::1]:8080/twilio/stream"),
        (("::ffff:10.1.2.3", 9000, 0, 0), "ws://10.1.2.3:9000/twilio/stream"),
        (("127.0.0.1", 80), "ws://127.0.0.1:80/twilio/stream"),  # a listener's port is always written
        (None, "ws://127.0.0.1:8080/twilio/stream"),  # the transport is gone: the configured port
    ],
)
def test_without_a_public_url_streams_point_at_this_listener(sockname, expected):
    assert urls.stream_url("", "/twilio/stream", sockname, 8080) == expected


@pytest.mark.parametrize(
    ("public", "expected"),
    [
        ("https://voice.example.com", "wss://voice.example.com/twilio/stream"),
        ("http://voice.example.com", "ws://voice.example.com/twilio/stream"),
        ("https://voice.example.com/", "wss://voice.example.com/twilio/stream"),
        ("https://example.com/gw", "wss://example.com/gw/twilio/stream"),  # a path prefix is kept
        ("https://example.com/gw/", "wss://example.com/gw/twilio/stream"),
        ("https://voice.example.com:8443", "wss://voice.example.com:8443/twilio/stream"),
        ("https://voice.example.com:443", "wss://voice.example.com:443/twilio/stream"),  # as written: it is signed
        ("https://[2001:db8::7]:8443", "wss://[2001:db8::7]:8443/twilio/stream"),
    ],
)
def test_with_a_public_url_streams_use_it_whatever_the_listener(public, expected):
    assert urls.stream_url(public, "/twilio/stream", ("10.0.0.5", 8080), 8080) == expected


@pytest.mark.parametrize(
    ("public", "host_header", "path_qs", "expected"),
    [
        ("https://voice.example.com", "evil.example", "/twilio/voice", "https://voice.example.com/twilio/voice"),
        ("https://example.com/gw/", "x", "/plivo/answer?a=1", "https://example.com/gw/plivo/answer?a=1"),
        # development fallback (no public URL): the URL as the carrier requested it
        ("", "127.0.0.1:8080", "/twilio/voice?x=y", "http://127.0.0.1:8080/twilio/voice?x=y"),
    ],
)
def test_the_signed_webhook_url_is_the_public_one_and_only_falls_back_to_host_in_development(
    public, host_header, path_qs, expected
):
    assert urls.webhook_url(public, host_header, path_qs) == expected


@pytest.mark.parametrize(
    ("public", "enabled", "expected"),
    [
        ("https://voice.example.com", True, "https://voice.example.com/twilio/status"),
        ("https://example.com/gw/", True, "https://example.com/gw/twilio/status"),
        ("https://voice.example.com", False, None),
        ("", True, None),  # the carrier could not reach it
    ],
)
def test_status_callbacks_need_a_public_url(public, enabled, expected):
    assert urls.status_callback_url(public, enabled) == expected


def test_the_embedded_agent_is_reached_on_this_listener():
    assert urls.local_url(("0.0.0.0", 8080), 9999, "/agent/v1/ws") == "ws://127.0.0.1:8080/agent/v1/ws"
    assert urls.local_url(None, 9999, "/agent/v1/ws") == "ws://127.0.0.1:9999/agent/v1/ws"


def test_sockname_reads_the_transport_and_tolerates_its_absence():
    class Transport:
        def get_extra_info(self, name: str) -> object:
            return ("127.0.0.1", 1) if name == "sockname" else None

    assert urls.sockname(Transport()) == ("127.0.0.1", 1)
    assert urls.sockname(None) is None
