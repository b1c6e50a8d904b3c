"""A stand-in for Twilio's REST API (api.twilio.com, which tests cannot reach), as much of the Calls resource as the
gateway uses (docs/architecture/twilio-media-streams.md#ending-a-call, #transfer,
#call-status; Twilio "Call resource", API 2010-04-01). Lives in tests/ only.

It checks what the real API would refuse, so a malformed request fails the test instead of passing silently:
- HTTP Basic auth with the Account SID and Auth Token, else 401 with Twilio's error body (code 20003);
- the account in the path is that Account SID, the body is ``application/x-www-form-urlencoded``;
- ``Calls.json`` (create): ``To`` (21201), ``From`` (21603), exactly one of ``Twiml``/``Url`` (21205), TwiML that
  parses with a ``<Response>`` root (12100), ``StatusCallbackEvent`` values from the documented set; answers 201
  with a Call resource (``status: queued``); answering-machine detection fields as Twilio documents them
  (``MachineDetection`` ``Enable``/``DetectMessageEnd``, ``AsyncAmd`` ``true``/``false``, ``AsyncAmdStatusCallback``
  an absolute URL, required with ``AsyncAmd=true``; ``AsyncAmdStatusCallbackMethod`` ``POST``/``GET``), and
  :meth:`FakeTwilioRest.post_amd` plays Twilio posting the result, signed, to that callback;
- ``Calls/{CA}.json`` (update): exactly one of ``Status`` (``completed``/``canceled``), ``Twiml``, ``Url``; a call that
  is over (or unknown) answers 404 with code 20404, as Twilio does for a call the caller already hung up.
- TwiML with ``<Dial><Conference>`` (warm transfers): only the attributes and values Twilio documents for
  ``<Conference>`` (12200 otherwise); :meth:`FakeTwilioRest.answer_into_conference` plays a created call answered
  (its ``<Say>`` heard, then the room entered, reported to the ``<Conference statusCallback>`` as
  ``participant-join``), :meth:`FakeTwilioRest.post_call_status` a created call's status callback, and a redirect
  into a room records who joined it when (:attr:`FakeTwilioRest.rooms`).
Unknown form fields are refused (400) rather than ignored.

Every request is recorded (time, path, multi-valued form, Basic credentials) in :attr:`FakeTwilioRest.requests`.
``on_update`` / ``on_create`` hooks let a test play Twilio's side effects: a redirect or hang-up stops the media
stream (the test's hook makes its Twilio peer send ``stop``), a created call connects its stream. ``fail_next``
scripts error answers."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from aiohttp import web

API = "/2010-04-01"
CREATE_FIELDS = {
    "To",
    "From",
    "Twiml",
    "Url",
    "Method",
    "StatusCallback",
    "StatusCallbackMethod",
    "StatusCallbackEvent",
    "Timeout",
    "MachineDetection",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
}
UPDATE_FIELDS = {"Status", "Twiml", "Url", "Method", "StatusCallback", "StatusCallbackMethod"}
STATUS_EVENTS = {"initiated", "ringing", "answered", "completed"}
FINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


@dataclass
class RestRequest:
    t: float
    method: str
    path: str
    form: dict[str, list[str]]
    auth: tuple[str, str] | None
    content_type: str
    status: int = 0  # what the fake answered

    def one(self, name: str) -> str:
        values = self.form.get(name, [])
        assert len(values) == 1, f"{name}: {values}"
        return values[0]


@dataclass
class FakeCall:
    sid: str
    to: str = "+15550002222"
    from_: str = "+15550001111"
    status: str = "in-progress"
    direction: str = "inbound"
    twiml: str = ""
    url: str = ""
    status_callback: str = ""
    status_callback_events: list[str] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)  # TwiML (or Url) of each redirect, in order
    heard: list[str] = field(default_factory=list)  # <Say> texts the callee heard (answer_into_conference)
    machine_detection: str = ""  # Enable | DetectMessageEnd (answering-machine detection), "" if not asked
    amd_callback: str = ""  # AsyncAmdStatusCallback
    hung_up_at: float | None = None

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": self.direction,
            "api_version": "2010-04-01",
            "date_created": None,
            "date_updated": None,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "parent_call_sid": None,
            "uri": f"{API}/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


Hook = Callable[[FakeCall, RestRequest], Awaitable[None]]


class FakeTwilioRest:
    def __init__(self, account_sid: str = "AC" + "1" * 32, auth_token: str = "rest-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.fail_next: list[tuple[int, int, str]] = []  # (HTTP status, Twilio code, message) for the next requests
        self.delay_s = 0.0  # answer this much later (timeouts)
        self.on_update: list[Hook] = []
        self.on_create: list[Hook] = []
        self.changed = asyncio.Event()  # set on every request (tests wait on it)
        #: Conference rooms: name → [(time, CallSid)] in the order calls entered them.
        self.rooms: dict[str, list[tuple[float, str]]] = {}
        self.url = ""  # set by the fixture: the base URL to configure as [twilio] api_base_url
        self.app = web.Application()
        self.app.router.add_post(API + "/Accounts/{account}/Calls.json", self._create)
        self.app.router.add_post(API + "/Accounts/{account}/Calls/{sid}.json", self._update)

    # ---- test helpers ----------------------------------------------------------------------------------------
    def add_call(self, sid: str, status: str = "in-progress", **kw: Any) -> FakeCall:
        """A call Twilio knows about (e.g. an inbound call the test's peer carries)."""
        call = self.calls[sid] = FakeCall(sid, status=status, **kw)
        return call

    def end_call(self, sid: str, status: str = "completed") -> None:
        """The caller hung up: the call is over, so updates to it now answer 404/20404."""
        call = self.calls.setdefault(sid, FakeCall(sid))
        call.status = status
        call.hung_up_at = time.monotonic()

    def updates(self, sid: str | None = None) -> list[RestRequest]:
        return [r for r in self.requests if "/Calls/" in r.path and (sid is None or r.path.endswith(f"/{sid}.json"))]

    def creates(self) -> list[RestRequest]:
        return [r for r in self.requests if r.path.endswith("/Calls.json")]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()

    # ---- the API --------------------------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    async def _record(self, request: web.Request) -> tuple[RestRequest, web.Response | None]:
        form: dict[str, list[str]] = {}
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            data = await request.post()
            for k in data:
                form.setdefault(k, [str(v) for v in data.getall(k)])
        auth = _basic(request.headers.get("Authorization", ""))
        rec = RestRequest(time.monotonic(), request.method, request.path, form, auth, ctype)
        self.requests.append(rec)
        self.changed.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if auth != (self.account_sid, self.auth_token):
            return rec, self._error(401, 20003, "Authenticate")
        if request.match_info["account"] != self.account_sid:
            return rec, self._error(404, 20404, f"The requested resource {request.path} was not found")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return rec, self._error(400, 20001, "expected an application/x-www-form-urlencoded body")
        if self.fail_next:
            status, code, message = self.fail_next.pop(0)
            return rec, self._error(status, code, message)
        return rec, None

    async def _create(self, request: web.Request) -> web.Response:
        rec, refusal = await self._record(request)
        resp = refusal or self._create_checked(rec)
        rec.status = resp.status
        if resp.status == 201:
            call = self.calls[_json_sid(resp)]
            for hook in list(self.on_create):
                await hook(call, rec)
        return resp

    def _create_checked(self, rec: RestRequest) -> web.Response:
        f = rec.form
        unknown = set(f) - CREATE_FIELDS
        if unknown:
            return self._error(400, 20001, f"unknown parameter(s) {sorted(unknown)}")
        if len(f.get("To", [])) != 1 or not f["To"][0]:
            return self._error(400, 21201, "No 'To' number is specified")
        if len(f.get("From", [])) != 1 or not f["From"][0]:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if ("Twiml" in f) == ("Url" in f):
            return self._error(400, 21205, "Url parameter is required (or Twiml, but not both).")
        if "Twiml" in f and not _parses(f["Twiml"][0]):
            return self._error(400, 12100, "Document parse failure")
        if "Twiml" in f and (bad := _conference_problem(f["Twiml"][0])):
            return self._error(400, 12200, bad)
        events = f.get("StatusCallbackEvent", [])
        if not set(events) <= STATUS_EVENTS:
            return self._error(400, 21626, f"invalid StatusCallbackEvent {events}")
        amd = f.get("MachineDetection", [""])[0]
        if amd not in ("", "Enable", "DetectMessageEnd"):
            return self._error(400, 21200, f"invalid MachineDetection {amd!r}")
        async_amd = f.get("AsyncAmd", ["false"])[0]
        amd_url = f.get("AsyncAmdStatusCallback", [""])[0]
        if async_amd not in ("true", "false") or (async_amd == "true" and not amd):
            return self._error(400, 21200, "AsyncAmd is true or false, and needs MachineDetection")
        if async_amd == "true" and not amd_url.startswith(("https://", "http://")):
            return self._error(400, 21262, "No AMD status callback URL provided")
        if f.get("AsyncAmdStatusCallbackMethod", ["POST"])[0] not in ("POST", "GET"):
            return self._error(400, 21200, "invalid AsyncAmdStatusCallbackMethod")
        sid = "CA" + secrets.token_hex(16)
        call = self.calls[sid] = FakeCall(
            sid,
            to=f["To"][0],
            from_=f["From"][0],
            status="queued",
            direction="outbound-api",
            twiml=f.get("Twiml", [""])[0],
            url=f.get("Url", [""])[0],
            status_callback=f.get("StatusCallback", [""])[0],
            status_callback_events=events,
            machine_detection=amd,
            amd_callback=amd_url,
        )
        return web.json_response(call.resource(self.account_sid), status=201)

    async def post_call_status(self, http: Any, call_sid: str, status: str, *, deliver_to: str) -> int:
        """Twilio's status callback of a call it created (``StatusCallback``, form, signed), e.g. ``ringing``,
        ``busy``, ``no-answer``. The call takes that status. Returns the HTTP status the gateway answered."""
        call = self.calls[call_sid]
        assert call.status_callback, "the call was created without a StatusCallback"
        call.status = status
        form = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "CallStatus": status,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
            "ApiVersion": "2010-04-01",
        }
        return await _post_signed(http, call.status_callback, form, self.auth_token, deliver_to)

    async def answer_into_conference(
        self, http: Any, call_sid: str, *, deliver_to: str, target: Any | None = None
    ) -> int:
        """A created call is answered and Twilio runs its TwiML with the simulator's transfer target
        (:class:`gateway.simulator.callee.TransferTarget`) on the line: each ``<Say>`` is heard (also recorded in
        ``call.heard``), then ``<Dial><Conference>`` enters the room, whose ``statusCallback`` is told of it
        (``participant-join``, signed). Returns the HTTP status the gateway answered (204 with no callback)."""
        from gateway.simulator.callee import TransferTarget

        call = self.calls[call_sid]
        call.status = "in-progress"
        target = target or TransferTarget()
        report = target.answer(call.twiml, call_sid, self.account_sid, self.auth_token)
        call.heard += target.heard
        self.rooms.setdefault(target.room, []).append((time.monotonic(), call_sid))
        if report is None:
            return 204
        url, form = report
        signature = form.pop("X-Twilio-Signature")
        target_url = deliver_to.rstrip("/") + urlsplit(url).path
        async with http.post(target_url, data=form, headers={"X-Twilio-Signature": signature}) as r:
            return int(r.status)

    async def post_amd(
        self, http: Any, call_sid: str, answered_by: str, *, deliver_to: str, detection_ms: int = 2400
    ) -> int:
        """Twilio's side of asynchronous AMD: POST the result to the call's ``AsyncAmdStatusCallback`` as a form,
        signed with the auth token over that URL (``X-Twilio-Signature``), delivered to ``deliver_to`` (the
        gateway's loopback base) at the callback's path. Returns the HTTP status the gateway answered."""
        from urllib.parse import urlsplit

        from gateway.security import twilio_signature

        call = self.calls[call_sid]
        assert call.amd_callback, "the call was not placed with AsyncAmd"
        form = {
            "AccountSid": self.account_sid,
            "CallSid": call_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(detection_ms),
        }
        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, call.amd_callback, form)}
        async with http.post(
            deliver_to.rstrip("/") + urlsplit(call.amd_callback).path, data=form, headers=headers
        ) as r:
            return int(r.status)

    async def _update(self, request: web.Request) -> web.Response:
        rec, refusal = await self._record(request)
        call = self.calls.get(request.match_info["sid"])
        resp = refusal or self._update_checked(rec, call)
        rec.status = resp.status
        if resp.status == 200 and call is not None:
            for hook in list(self.on_update):
                await hook(call, rec)
        return resp

    def _update_checked(self, rec: RestRequest, call: FakeCall | None) -> web.Response:
        f = rec.form
        unknown = set(f) - UPDATE_FIELDS
        if unknown:
            return self._error(400, 20001, f"unknown parameter(s) {sorted(unknown)}")
        if call is None or call.status in FINAL:
            return self._error(404, 20404, f"The requested resource {rec.path} was not found")
        if sum(k in f for k in ("Status", "Twiml", "Url")) != 1:
            return self._error(400, 20001, "exactly one of Status, Twiml or Url")
        if "Status" in f:
            status = rec.one("Status")
            if status not in ("completed", "canceled"):
                return self._error(400, 21218, f"Invalid Status {status!r}")
            call.status = "completed" if status == "completed" or call.status in ("queued", "ringing") else call.status
            call.hung_up_at = time.monotonic()
        elif "Twiml" in f:
            twiml = rec.one("Twiml")
            if not _parses(twiml):
                return self._error(400, 12100, "Document parse failure")
            if bad := _conference_problem(twiml):
                return self._error(400, 12200, bad)
            call.redirects.append(twiml)
            room = ElementTree.fromstring(twiml).find("./Dial/Conference")
            if room is not None and room.text:
                self.rooms.setdefault(room.text, []).append((time.monotonic(), call.sid))
        else:
            call.redirects.append(rec.one("Url"))
        return web.json_response(call.resource(self.account_sid), status=200)


async def _post_signed(http: Any, url: str, form: dict[str, str], token: str, deliver_to: str) -> int:
    from urllib.parse import urlsplit

    from gateway.security import twilio_signature

    headers = {"X-Twilio-Signature": twilio_signature(token, url, form)}
    async with http.post(deliver_to.rstrip("/") + urlsplit(url).path, data=form, headers=headers) as r:
        return int(r.status)


_CONFERENCE_ATTRS = {
    "muted": {"true", "false"},
    "beep": {"true", "false", "onEnter", "onExit"},
    "startConferenceOnEnter": {"true", "false"},
    "endConferenceOnExit": {"true", "false"},
    "waitUrl": None,
    "waitMethod": {"GET", "POST"},
    "maxParticipants": None,
    "record": {"do-not-record", "record-from-start"},
    "trim": {"trim-silence", "do-not-trim"},
    "coach": None,
    "statusCallback": None,
    "statusCallbackEvent": None,
    "statusCallbackMethod": {"GET", "POST"},
    "participantLabel": None,
    "jitterBufferSize": {"off", "small", "medium", "large"},
    "region": None,
}
_CONFERENCE_EVENTS = {"start", "end", "join", "leave", "mute", "hold", "modify", "speaker", "announcement"}


def _conference_problem(twiml: str) -> str:
    """Why Twilio would refuse a ``<Conference>`` in this TwiML ('' if none, or no conference)."""
    for room in ElementTree.fromstring(twiml).iter("Conference"):
        for name, value in room.attrib.items():
            if name not in _CONFERENCE_ATTRS:
                return f"<Conference> has no attribute {name!r}"
            allowed = _CONFERENCE_ATTRS[name]
            if allowed is not None and value not in allowed:
                return f"<Conference {name}={value!r}> is not one of {sorted(allowed)}"
        events = room.attrib.get("statusCallbackEvent", "").split()
        if not set(events) <= _CONFERENCE_EVENTS:
            return f"<Conference statusCallbackEvent> {events} has values outside {sorted(_CONFERENCE_EVENTS)}"
        if not (room.text or "").strip():
            return "<Conference> needs a room name"
    return ""


def _parses(twiml: str) -> bool:
    try:
        return ElementTree.fromstring(twiml).tag == "Response"
    except ElementTree.ParseError:
        return False


def _basic(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, pw = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:
        return None
    return user, pw


def _json_sid(resp: web.Response) -> str:
    import json

    assert isinstance(resp.body, bytes)
    return str(json.loads(resp.body)["sid"])
