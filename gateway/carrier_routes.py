"""HTTP surface of the carriers beside Twilio (issue #9): one answer/webhook endpoint and one stream route each. Thin:
the answer documents, signatures and dialects are the pure modules of :mod:`gateway.carriers`; every stream is
served by :func:`gateway.app.serve_stream` with the carrier's dialect, so admission, the per-call token, the
transcoder and playout accounting are the same as Twilio's.

Routes (README "Carriers"):

====================================  ===========================================================================
``POST /signalwire/voice``            cXML ``<Connect><Stream codec=…>``; ``X-SignalWire-Signature`` (or legacy
                                      ``X-Twilio-Signature``) checked with ``SIGNALWIRE_SIGNING_KEY``
``GET  /signalwire/stream``           token in ``<Parameter name="token">``; upgrade signature checked if sent
``POST /telnyx/voice``                TeXML ``<Connect><Stream bidirectionalMode="rtp">``; Ed25519 signature checked
                                      with ``TELNYX_PUBLIC_KEY``
``GET  /telnyx/stream``               token in ``<Parameter name="token">`` (→ ``start.custom_parameters``)
``POST /plivo/answer``                Plivo XML ``<Stream bidirectional="true" keepCallAlive="true">``; V3
                                      signature checked with ``PLIVO_AUTH_TOKEN``
``GET  /plivo/stream/{token}``        token in the URL path (``extraHeaders`` cannot carry it)
``GET|POST /vonage/answer``           NCCO ``connect`` → websocket; JWT checked with ``VONAGE_SIGNATURE_SECRET``
``GET  /vonage/stream``               token in the NCCO ``headers`` (→ ``websocket:connected``)
``GET  /exotel/answer``               the Voicebot applet's dynamic URL: ``{"url": "wss://…"}``; Basic auth
                                      (``EXOTEL_BASIC_AUTH``) or ``carriers.exotel_allowed_ips``
``GET  /exotel/stream``               token as a custom query parameter (→ ``start.custom_parameters``); same auth
====================================  ===========================================================================

A carrier's routes exist only when its door is open (:meth:`gateway.config.Settings.open_doors`: its secret is set,
or development without a public URL, or an explicit ``carriers.NAME.enabled = true``); with its secret unset its
webhook signature is not checked. The per-call token is always required, and only a token minted at the same door
opens its stream (docs/security.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from . import urls
from .admission import REFUSED_DRAINING
from .call_control_http import status_callback_url
from .carriers import exotel, plivo, signalwire, telnyx, twiml, vonage
from .carriers.base import Dialect
from .carriers.twilio import TwilioDialect
from .config import Settings
from .http_input import read_json, read_form
from .keys import CALLS, METRICS, SETTINGS
from .media_stream import serve_stream
from .outbound import token_subject
from .security import mint_call_token, validate_twilio_signature

__all__ = ["setup"]

log = structlog.get_logger("gateway")

BUSY = "Sorry, all our lines are busy. Please call again in a few minutes."
DRAINING = "Sorry, we can't take your call right now. Please call again shortly."


# ---- shared -----------------------------------------------------------------------------------------------------
def _ws_url(settings: Settings, request: web.Request, path: str) -> str:
    return urls.stream_url(settings.server.public_url, path, urls.sockname(request.transport), settings.server.port)


def _signed_url(settings: Settings, request: web.Request) -> str:
    return urls.webhook_url(settings.server.public_url, request.host, request.path_qs)


def _refused(request: web.Request, where: str, carrier: str, reason: str, status: int = 403) -> web.Response:
    if where == "webhook":
        log.warning("webhook.refused", reason=reason, carrier=carrier, call_sid=None)
    else:
        log.warning("stream.refused", reason=reason, carrier=carrier)
    request.app[METRICS].refused(where, reason.replace(" ", "_"))
    return web.Response(status=status, text=reason)


def _reserve(request: web.Request, carrier: str, call_id: str) -> str | None:
    """Reserve a call slot at the webhook (gateway.admission). Returns None, or the text to say when refusing."""
    calls = request.app[CALLS]
    refusal = calls.admission.reserve(call_id, time.monotonic())
    if refusal is None:
        return None
    reason = "draining" if refusal == REFUSED_DRAINING else "at_capacity"
    log.warning("webhook.refused", reason=reason, call_sid=call_id, carrier=carrier)
    request.app[METRICS].refused("webhook", reason)
    return DRAINING if refusal == REFUSED_DRAINING else BUSY


def _token(settings: Settings, carrier: str, call_id: str, to: str = "") -> str:
    """The stream token for ``call_id``, valid only at ``carrier``'s stream door and only with the profile that
    ``to`` (exactly as the stream will present it) selects (gateway.security)."""
    subject = token_subject({}, call_id, settings.profile_for(to)[0])
    return mint_call_token(settings.secrets.token_secret, subject, time.time(), settings.server.call_token_ttl_s,
                           scope=carrier)


def _xml(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/xml")



def _stream(make: Callable[[web.Request], Dialect | web.Response]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        dialect = make(request)
        if isinstance(dialect, web.Response):
            return dialect
        return await serve_stream(request, dialect)

    return handler

# ---- Twilio --------------------------------------------------------------------------------------------------------
async def voice_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    signed, flat = await read_form(request)
    token = settings.secrets.twilio_auth_token
    if token:
        if not validate_twilio_signature(token, _signed_url(settings, request), signed,
                                         request.headers.get("X-Twilio-Signature")):
            log.warning("webhook.refused", reason="bad signature", call_sid=flat.get("CallSid"))
            request.app[METRICS].refused("webhook", "bad_signature")
            return web.Response(status=403, text="invalid signature")
    call_sid = flat.get("CallSid", "")
    if not call_sid:
        return web.Response(status=400, text="CallSid missing")
    calls = request.app[CALLS]
    refusal = calls.admission.reserve(call_sid, time.monotonic())
    if refusal == REFUSED_DRAINING:
        log.info("webhook.refused", reason="draining", call_sid=call_sid)
        request.app[METRICS].refused("webhook", "draining")
        return _xml(twiml.say_and_hang_up(DRAINING))
    if refusal is not None:
        log.warning("webhook.refused", reason="at_capacity", call_sid=call_sid, active=len(calls))
        request.app[METRICS].refused("webhook", "at_capacity")
        return _xml(twiml.say_and_hang_up(BUSY))
    params = {"from": flat.get("From", ""), "to": flat.get("To", "")}
    call_token = mint_call_token(settings.secrets.token_secret,
                                 token_subject(params, call_sid, settings.profile_for(params["to"])[0]), time.time(),
                                 settings.server.call_token_ttl_s, scope="twilio")
    body = twiml.connect_stream(_ws_url(settings, request, "/twilio/stream"), {"token": call_token, **params},
                                status_callback_url(settings))
    log.info("webhook.answered", call_sid=call_sid)
    return _xml(body)


async def media_stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    auth = settings.secrets.twilio_auth_token
    if auth:
        sig = request.headers.get("X-Twilio-Signature")
        if not validate_twilio_signature(auth, _ws_url(settings, request, "/twilio/stream"), {}, sig):
            reason = "missing_signature" if sig is None else "bad_signature"
            log.warning("stream.refused", reason=reason, carrier="twilio")
            request.app[METRICS].refused("stream", reason)
            return web.Response(status=403, text="invalid signature")
    return await serve_stream(request, TwilioDialect())


# ---- SignalWire (§A.10): Twilio-compatible ------------------------------------------------------------------------
async def signalwire_voice(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    multi, flat = await read_form(request)
    key = settings.secrets.signalwire_signing_key
    if key and not signalwire.validate_signalwire_signature(key, _signed_url(settings, request), multi, request.headers):
        return _refused(request, "webhook", "signalwire", "bad signature")
    call_sid = flat.get("CallSid", "")
    if not call_sid:
        return web.Response(status=400, text="CallSid missing")
    say = _reserve(request, "signalwire", call_sid)
    if say is not None:
        return _xml(twiml.say_and_hang_up(say))
    body = signalwire.connect_stream(
        _ws_url(settings, request, "/signalwire/stream"),
        {"token": _token(settings, "signalwire", call_sid, flat.get("To", "")), "from": flat.get("From", ""),
         "to": flat.get("To", "")},
        codec=settings.carriers.signalwire_codec,
    )
    log.info("webhook.answered", call_sid=call_sid, carrier="signalwire")
    return _xml(body)


def _signalwire_stream(request: web.Request) -> Dialect | web.Response:
    settings = request.app[SETTINGS]
    key = settings.secrets.signalwire_signing_key
    if key and any(h in request.headers for h in signalwire.SIGNATURE_HEADERS):
        # Signed like Twilio's upgrade: over the wss:// URL of the cXML, no params (§A.2).
        url = _ws_url(settings, request, "/signalwire/stream")
        if not signalwire.validate_signalwire_signature(key, url, {}, request.headers):
            return _refused(request, "stream", "signalwire", "bad upgrade signature")
    return signalwire.SignalWireStream()


# ---- Telnyx (§A.10) -----------------------------------------------------------------------------------------------
async def telnyx_voice(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    raw = await request.read()
    public_key = settings.secrets.telnyx_public_key
    if public_key and not telnyx.verify_telnyx_signature(
        public_key, raw, request.headers.get(telnyx.TIMESTAMP_HEADER),
        request.headers.get(telnyx.SIGNATURE_HEADER), now=time.time(),
    ):
        return _refused(request, "webhook", "telnyx", "bad signature")
    _, flat = await read_form(request)  # TeXML webhooks are form-encoded, Twilio-style (CallSid = call_control_id)
    call_id = flat.get("CallSid", "")
    if not call_id:
        return web.Response(status=400, text="CallSid missing")
    say = _reserve(request, "telnyx", call_id)
    if say is not None:
        return _xml(twiml.say_and_hang_up(say))
    body = telnyx.texml_stream(
        _ws_url(settings, request, "/telnyx/stream"),
        {"token": _token(settings, "telnyx", call_id, flat.get("To", "")), "from": flat.get("From", ""),
         "to": flat.get("To", "")},
        codec=settings.carriers.telnyx_codec,
    )
    log.info("webhook.answered", call_sid=call_id, carrier="telnyx")
    return _xml(body)


# ---- Plivo (§A.10) ------------------------------------------------------------------------------------------------
async def plivo_answer(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    multi, flat = await read_form(request)
    token = settings.secrets.plivo_auth_token
    if token and not plivo.validate_plivo_v3_signature(
        token, request.method, _signed_url(settings, request), multi,
        request.headers.get(plivo.NONCE_HEADER), request.headers.get(plivo.SIGNATURE_HEADER),
    ):
        return _refused(request, "webhook", "plivo", "bad signature")
    call_uuid = flat.get("CallUUID", "")
    if not call_uuid:
        return web.Response(status=400, text="CallUUID missing")
    say = _reserve(request, "plivo", call_uuid)
    if say is not None:
        return _xml('<?xml version="1.0" encoding="UTF-8"?><Response><Speak>' + twiml.xml_text(say)
                    + '</Speak><Hangup/></Response>')
    # The token rides in the path: extraHeaders only take alphanumerics (§A.10, §A.2 path segments).
    numbers = {k: "".join(ch for ch in flat.get(k.capitalize(), "") if ch.isalnum()) for k in ("to", "from")}
    url = _ws_url(settings, request, "/plivo/stream/" + _token(settings, "plivo", call_uuid, plivo.e164(numbers["to"])))
    body = plivo.stream_xml(url, settings.carriers.plivo_content_type, numbers)
    log.info("webhook.answered", call_sid=call_uuid, carrier="plivo")
    return _xml(body)


def _plivo_stream(request: web.Request) -> Dialect:
    return plivo.PlivoStream(transport_params={"token": request.match_info["token"]})


# ---- Vonage (§A.10) -----------------------------------------------------------------------------------------------
async def vonage_answer(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    raw = await request.read()
    secret = settings.secrets.vonage_signature_secret
    if secret and not vonage.verify_vonage_jwt(secret, request.headers.get("Authorization"), raw, now=time.time()):
        return _refused(request, "webhook", "vonage", "bad signature")
    q = dict(request.query)
    if request.method == "POST" and raw:
        body = await read_json(request)
        if not isinstance(body, dict):
            return web.Response(status=400, text="answer body is not a JSON object")
        q.update({k: str(v) for k, v in body.items()})
    call_uuid = q.get("uuid", "")
    if not call_uuid:
        return web.Response(status=400, text="uuid missing")
    say = _reserve(request, "vonage", call_uuid)
    if say is not None:
        return web.json_response([{"action": "talk", "text": say}])

    def e164(n: str) -> str:
        return "+" + n if n.isdigit() else n  # Vonage sends numbers without the +

    ncco = vonage.ncco_connect(
        _ws_url(settings, request, "/vonage/stream"),
        {"token": _token(settings, "vonage", call_uuid, e164(q.get("to", ""))), "uuid": call_uuid,
         "from": e164(q.get("from", "")),
         "to": e164(q.get("to", ""))},
        settings.carriers.vonage_sample_rate,
    )
    log.info("webhook.answered", call_sid=call_uuid, carrier="vonage")
    return web.json_response(ncco)


def _vonage_stream(request: web.Request) -> Dialect:
    return vonage.VonageStream()


# ---- Exotel (§A.10) -----------------------------------------------------------------------------------------------
def _exotel_auth(request: web.Request, where: str) -> web.Response | None:
    settings = request.app[SETTINGS]
    basic, nets = settings.secrets.exotel_basic_auth, settings.carriers.exotel_allowed_ips
    if not basic and not nets:
        return None  # local development
    user, _, password = basic.partition(":")
    if basic and exotel.verify_basic_auth(request.headers.get("Authorization"), user, password):
        return None
    if nets and exotel.ip_allowed(request.remote, nets):
        return None
    return _refused(request, where, "exotel", "bad credentials")


async def exotel_answer(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    refused = _exotel_auth(request, "webhook")
    if refused is not None:
        return refused
    call_sid = request.query.get("CallSid", "")
    if not call_sid:
        return web.Response(status=400, text="CallSid missing")
    if _reserve(request, "exotel", call_sid) is not None:
        return web.Response(status=503, text="not accepting calls")  # the applet moves on; nothing to say here
    doc = exotel.stream_url_document(
        _ws_url(settings, request, "/exotel/stream"), settings.carriers.exotel_sample_rate,
        {"token": _token(settings, "exotel", call_sid)},
    )
    log.info("webhook.answered", call_sid=call_sid, carrier="exotel")
    return web.json_response(doc)


def _exotel_stream(request: web.Request) -> Dialect | web.Response:
    refused = _exotel_auth(request, "stream")
    if refused is not None:
        return refused
    token = request.query.get("token")
    return exotel.ExotelStream(transport_params={"token": token} if token else None)


def setup(app: web.Application) -> None:
    """Add the routes of every carrier whose door is open (``app[SETTINGS]``)."""
    doors = app[SETTINGS].open_doors()
    for carrier, authenticated in doors.items():
        if not authenticated:
            # Development only (config refuses this with a public URL): say it loudly, once per door.
            log.warning("carrier.unauthenticated", carrier=carrier,
                        detail="its webhook and stream accept anyone who can reach this port; set its secret "
                        "before exposing the gateway (docs/security.md)")
    if "twilio" in doors:
        app.router.add_post("/twilio/voice", voice_webhook)
        app.router.add_get("/twilio/stream", media_stream)
    if "signalwire" in doors:
        app.router.add_post("/signalwire/voice", signalwire_voice)
        app.router.add_get("/signalwire/stream", _stream(_signalwire_stream))
    if "telnyx" in doors:
        app.router.add_post("/telnyx/voice", telnyx_voice)
        app.router.add_get("/telnyx/stream", _stream(lambda r: telnyx.TelnyxStream()))
    if "plivo" in doors:
        app.router.add_post("/plivo/answer", plivo_answer)
        app.router.add_get("/plivo/stream/{token}", _stream(_plivo_stream))
    if "vonage" in doors:
        app.router.add_get("/vonage/answer", vonage_answer)
        app.router.add_post("/vonage/answer", vonage_answer)
        app.router.add_get("/vonage/stream", _stream(_vonage_stream))
    if "exotel" in doors:
        app.router.add_get("/exotel/answer", exotel_answer)
        app.router.add_get("/exotel/stream", _stream(_exotel_stream))
