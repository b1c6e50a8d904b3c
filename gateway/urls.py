"""Every URL the gateway writes into an answer document or signs: webhooks, media streams, status callbacks, the
embedded agent. Pure: strings and addresses in, strings out; no request, no socket, no environment.

Two sources, and only two (docs/security.md, "Signatures"):

- the **public URL** (``server.public_url`` / ``GATEWAY_PUBLIC_URL``), scheme, host, port and path prefix exactly as
  configured: what carriers reach and sign;
- without one (local development), the **address this listener was reached on** (the accepted socket's own
  address, never a request header): a stream URL pointing at our own loopback interface.

The one exception is :func:`webhook_url` without a public URL: the URL a carrier signed is then the one it requested,
``Host`` header included. That is the documented development fallback (docs/reference/configuration.md#server); a
gateway that carriers can reach has a public URL, and its signatures are checked over that.

The address rule (one for every URL built here): an unspecified address (``0.0.0.0``, ``::``, none) is reached on
the loopback of its family (``127.0.0.1``, ``[::1]``); an IPv4-mapped IPv6 address (``::ffff:10.0.0.5``, what a
dual-stack socket reports for an IPv4 peer) is written as the IPv4 address; any other IPv6 address is bracketed,
with a zone (``fe80::1%eth0``) percent-encoded as RFC 6874 asks (``[fe80::1%25eth0]``). The port is always
written for a listener's address (it is rarely the scheme's default) and never added to a public URL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "host_for_url",
    "listener",
    "local_url",
    "public_url",
    "sockname",
    "status_callback_url",
    "stream_url",
    "webhook_url",
]

#: The WebSocket scheme that goes with each HTTP scheme of a public URL.
_WS_SCHEME = {"https": "wss", "http": "ws"}


def host_for_url(address: str | None) -> str:
    """An address as the host part of a URL reaching it (the module docstring's address rule)."""
    if not address or address == "0.0.0.0":
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    if ":" not in address:
        return address  # an IPv4 address or a name
    bare, _, zone = address.partition("%")
    try:
        ip = ipaddress.IPv6Address(bare)
    except ValueError:
        return f"[{address}]"
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"[{bare}%25{zone}]" if zone else f"[{bare}]"


def listener(local: Sequence[Any] | None, configured_port: int) -> tuple[str, int]:
    """``(host for a URL, port)`` of the socket a request came in on (``local``: its ``sockname``, as the transport
    reports it), or of ``127.0.0.1`` and the configured port when the transport does not say."""
    if not local:
        return "127.0.0.1", configured_port
    return host_for_url(str(local[0])), int(local[1])


def sockname(transport: Any) -> Sequence[Any] | None:
    """The local address of a request's transport (``request.transport``), or None once it is gone. Reads an
    attribute; no I/O."""
    return transport.get_extra_info("sockname") if transport is not None else None


def local_url(local: Sequence[Any] | None, configured_port: int, path: str, scheme: str = "ws") -> str:
    """``scheme://<this listener>/path``: how this process reaches itself (the embedded agent, development streams)."""
    host, port = listener(local, configured_port)
    return f"{scheme}://{host}:{port}{path}"


def public_url(public: str, path: str, websocket: bool = False) -> str:
    """``path`` under the configured public URL (its path prefix kept, its port as written); ``websocket``: on the
    matching ws/wss scheme."""
    u = urlsplit(public)
    scheme = _WS_SCHEME.get(u.scheme, u.scheme) if websocket else u.scheme
    return urlunsplit((scheme, u.netloc, u.path.rstrip("/") + path, "", ""))


def stream_url(public: str, path: str, local: Sequence[Any] | None, configured_port: int) -> str:
    """Where a carrier (or the softphone page) opens a media stream: on the public URL when there is one, else on
    this listener's own address (local development). Never taken from request headers, which a caller controls."""
    if public:
        return public_url(public, path, websocket=True)
    return local_url(local, configured_port, path)


def webhook_url(public: str, host_header: str, path_qs: str) -> str:
    """The URL a carrier signed when it requested ``path_qs``: the public URL + path + query; without a public URL
    (development only), the URL as requested, ``Host`` header included."""
    base = public or f"http://{host_header}"
    return base.rstrip("/") + path_qs


def status_callback_url(public: str, enabled: bool, path: str = "/twilio/status") -> str | None:
    """Where a carrier posts status callbacks: only with a public URL (the carrier must reach it, and it is what the
    signature is computed over) and callbacks ``enabled``."""
    if not public or not enabled:
        return None
    return public.rstrip("/") + path
