"""The ``<Dial>`` documents a transfer by URL points at: ``GET|POST /control/dial/{carrier}/{token}?to=…``
(docs/how-to/call-control.md#transfer-by-url). Thin aiohttp handler; the documents are the carriers' pure builders.

Plivo transfers a live call only by URL (``aleg_url``), and SignalWire's LaML call update documents ``Url`` (not
inline TwiML), so for those two carriers the gateway serves the XML itself: the transfer mints a URL whose token is
an HMAC (``GATEWAY_TOKEN_SECRET``, :func:`gateway.security.mint_call_token`) over the destination, scoped to
``dial-<carrier>`` and valid for :data:`TTL_S`. Whoever fetches it (the carrier, within seconds) gets the document; a
token for another destination or carrier, or an expired one, gets 403 and nothing else. The URL is on the public URL
when one is set, else on this listener's own address (local development and tests).
"""

from __future__ import annotations

import time
from urllib.parse import quote

from aiohttp import web

from ..carriers import twiml
from ..carriers.plivo import dial_xml
from ..keys import SETTINGS
from ..security import TokenError, mint_call_token, verify_call_token

__all__ = ["CARRIERS", "PATH", "TTL_S", "dial_url", "setup"]

PATH = "/control/dial/{carrier}/{token}"
#: How long a transfer's URL is good for: the carrier fetches it right after the transfer request.
TTL_S = 300.0
#: The carriers that transfer by URL, and the document each runs.
CARRIERS = {"plivo": dial_xml, "signalwire": twiml.dial}


def dial_url(base: str, secret: bytes, carrier: str, destination: str, now: float) -> str:
    """The URL of the ``<Dial>`` document of ``destination`` in ``carrier``'s XML, under ``base``."""
    if carrier not in CARRIERS:
        raise ValueError(f"{carrier!r} does not transfer by URL")
    token = mint_call_token(secret, destination, now, TTL_S, scope=f"dial-{carrier}")
    path = PATH.format(carrier=carrier, token=token)
    return f"{base.rstrip('/')}{path}?to={quote(destination, safe='')}"


async def dial_document(request: web.Request) -> web.Response:
    carrier = request.match_info["carrier"]
    build = CARRIERS.get(carrier)
    if build is None:
        raise web.HTTPNotFound()
    destination = request.query.get("to", "")
    secret = request.app[SETTINGS].secrets.token_secret
    try:
        verify_call_token(secret, request.match_info["token"], destination, time.time(), scope=f"dial-{carrier}")
    except TokenError:
        return web.Response(status=403, text="not a transfer this gateway made")
    return web.Response(text=build(destination), content_type="application/xml")


def setup(app: web.Application) -> None:
    app.router.add_route("GET", PATH, dial_document)
    app.router.add_route("POST", PATH, dial_document)
