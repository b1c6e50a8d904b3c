"""Outbound calls and per-call variables: the pure parts of ``POST /calls`` (docs/how-to/outbound-calls.md). Pure.

``POST /calls`` (bearer ``GATEWAY_API_KEY``) takes JSON ``{"to", "from", "profile"?, "variables"?,
"machine_detection"?}`` and asks
Twilio to place the call with TwiML that connects the media stream: the same ``<Connect><Stream>`` the voice
webhook answers (:func:`gateway.carriers.twiml.connect_stream`), with the stream token and these ``<Parameter>``s:

- ``outbound``: a random id; ``profile``; ``to`` / ``from``; one ``var_<name>`` per variable; ``amd`` = ``1`` when
  ``machine_detection`` is true (answering-machine detection, :mod:`gateway.amd`).

**The token.** The webhook binds a call's token to its CallSid, but an outbound call has no CallSid until Twilio's
create-call answers, and its TwiML travels *in* that request. So an outbound token is bound instead to
``outbound|<id>|<digest>``, where the digest is a SHA-256 over every other parameter (:func:`token_subject`): a
stream presenting it must carry exactly the parameters it was minted for, so the profile and the variables are as
authenticated as the token itself (a tampered variable fails verification). Only streams whose token is bound
this way may choose a profile or carry variables; an inbound call's profile still follows its called number.

**Variables** are a flat string map. ``{name}`` placeholders in the profile's ``system_prompt`` and ``greeting`` are
filled from it (:func:`fill_template`: unknown names and other braces are left exactly as written), and the
result goes into the first ``session.update``. Twilio limits each ``<Parameter>`` to about 500 characters of name +
value (docs/architecture/twilio-media-streams.md#limits), so a variable that would not fit is refused (422) rather than
truncated. Text that XML cannot carry (control characters, U+FFFE/U+FFFF, lone surrogates) is refused too (422): the
TwiML would drop it (:func:`gateway.carriers.twiml.xml_safe`), so the stream would present other parameters than the
token was minted over.

**Destinations** go through an allow-list (:func:`dial_allowed`, ``[twilio] dial_allow``; docs/security.md): with
none configured, only E.164 numbers are dialled.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .carriers.twiml import xml_safe
from .errors import GatewayError
from .tools.call_control import destination_allowed

__all__ = [
    "OUTBOUND_PARAM",
    "VAR_PREFIX",
    "PARAMETER_LIMIT",
    "MAX_VARIABLES",
    "OutboundRequest",
    "RequestInvalid",
    "dial_allowed",
    "fill_template",
    "new_outbound_id",
    "outbound_parameters",
    "parse_outbound_request",
    "token_subject",
    "variables_from_parameters",
]

OUTBOUND_PARAM = "outbound"
VAR_PREFIX = "var_"
#: Twilio: each ``<Parameter>`` name + value under about 500 characters
#: (docs/architecture/twilio-media-streams.md#limits).
PARAMETER_LIMIT = 500
MAX_VARIABLES = 32
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# user@host[:port][;params], one "@", no "?headers": the grammar transfer_call accepts (gateway.tools.call_control),
# so "sip:*@pbx.example.com" in dial_allow pins the host ("sip:a@evil.example?x=@pbx.example.com" is no URI here).
_SIP = re.compile(
    r"sips?:[A-Za-z0-9._~%!$*+,=\-]{1,100}@[A-Za-z0-9.\-]{1,100}(:[0-9]{1,5})?"
    r"(;[A-Za-z0-9._~%=\-]{1,100}){0,10}"
)
_CLIENT = re.compile(r"client:[A-Za-z0-9_.\-]{1,100}")


class RequestInvalid(GatewayError, ValueError):
    """The ``POST /calls`` body cannot be served; ``status`` is the HTTP status to answer (400 or 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OutboundRequest:
    to: str
    from_: str
    profile: str
    variables: Mapping[str, str] = field(default_factory=dict)
    machine_detection: bool = False  # Twilio's answering-machine detection (gateway.amd)


def fill_template(template: str, variables: Mapping[str, str]) -> str:
    """Replace ``{name}`` with ``variables[name]``; every other character, unknown names and stray braces included,
    stays as written (unlike ``str.format``, which would raise on ``{unknown}`` or a lone ``{``)."""
    if not variables or "{" not in template:
        return template
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), template)


def parse_outbound_request(body: object, profiles: Collection[str], default_profile: str) -> OutboundRequest:
    """Check a ``POST /calls`` JSON body. Raises :class:`RequestInvalid` (400: wrong shape; 422: well-formed but
    unusable: unknown profile, bad number, a variable that would not fit in a ``<Parameter>``)."""
    if not isinstance(body, dict):
        raise RequestInvalid(400, "body must be a JSON object")
    unknown = sorted(set(body) - {"to", "from", "profile", "variables", "machine_detection"})
    if unknown:
        raise RequestInvalid(400, f"unknown field {unknown[0]!r}")
    to, from_ = body.get("to"), body.get("from")
    if not isinstance(to, str) or not isinstance(from_, str):
        raise RequestInvalid(400, "'to' and 'from' are required strings")
    to = re.sub(r"[\s\-.()]", "", to) if to.startswith("+") else to.strip()
    from_ = re.sub(r"[\s\-.()]", "", from_) if from_.startswith("+") else from_.strip()
    if not (_E164.fullmatch(to) or _SIP.fullmatch(to) or _CLIENT.fullmatch(to)):
        raise RequestInvalid(422, "'to' must be an E.164 number, a sip: URI or a client: name")
    if not (_E164.fullmatch(from_) or _CLIENT.fullmatch(from_)):
        raise RequestInvalid(422, "'from' must be an E.164 number of your Twilio account (or a client: name)")
    profile = body.get("profile", default_profile)
    if not isinstance(profile, str):
        raise RequestInvalid(400, "'profile' must be a string")
    if profile not in profiles:
        raise RequestInvalid(422, f"unknown profile {profile!r}")
    raw_vars = body.get("variables", {})
    if raw_vars is None:
        raw_vars = {}
    if not isinstance(raw_vars, dict):
        raise RequestInvalid(400, "'variables' must be an object of strings")
    if len(raw_vars) > MAX_VARIABLES:
        raise RequestInvalid(422, f"at most {MAX_VARIABLES} variables")
    variables: dict[str, str] = {}
    for name, value in raw_vars.items():
        if not isinstance(value, str):
            raise RequestInvalid(400, f"variable {name!r}: value must be a string")
        if not _VAR_NAME.fullmatch(name):
            raise RequestInvalid(422, f"variable {name!r}: names are letters, digits and _, not starting with a digit")
        if len(VAR_PREFIX + name) + len(value) > PARAMETER_LIMIT:
            raise RequestInvalid(
                422,
                f"variable {name!r} is too long: name + value must stay under {PARAMETER_LIMIT} characters "
                "(Twilio's <Parameter> limit)",
            )
        variables[name] = value
    # 'to' and 'from' cannot hold such characters (their grammars above); a variable's value is free text.
    for name, value in variables.items():
        if xml_safe(value) != value:
            raise RequestInvalid(
                422,
                f"variable {name!r} contains characters XML cannot carry (control characters, "
                "U+FFFE/U+FFFF or lone surrogates)",
            )
    amd = body.get("machine_detection", False)
    if not isinstance(amd, bool):
        raise RequestInvalid(400, "'machine_detection' must be true or false")
    return OutboundRequest(to=to, from_=from_, profile=profile, variables=variables, machine_detection=amd)


def dial_allowed(to: str, patterns: Sequence[str]) -> bool:
    """Whether ``POST /calls`` may dial ``to`` (as :func:`parse_outbound_request` returned it). No patterns: any
    E.164 number, nothing else. Patterns (``[twilio] dial_allow``): only what one of them matches, with the same
    rules as a profile's ``transfer_allow`` (:func:`gateway.tools.call_control.destination_allowed`: ``fnmatch``,
    case-sensitive, SIP URIs compared lower-cased)."""
    if not patterns:
        return _E164.fullmatch(to) is not None
    return destination_allowed(to, patterns)


def new_outbound_id() -> str:
    return "ob_" + secrets.token_hex(12)


def outbound_parameters(outbound_id: str, req: OutboundRequest) -> dict[str, str]:
    """The ``<Parameter>``s of an outbound call's stream, except ``token`` (minted over these by the caller:
    ``mint_call_token(secret, token_subject(params, "", ""), …, scope="twilio")``)."""
    params = {OUTBOUND_PARAM: outbound_id, "profile": req.profile, "to": req.to, "from": req.from_}
    params.update({VAR_PREFIX + k: v for k, v in req.variables.items()})
    if req.machine_detection:
        params["amd"] = "1"  # gateway.amd.AMD_PARAM: the call holds both ways until the verdict
    return params


def token_subject(parameters: Mapping[str, str], call_sid: str, profile: str) -> str:
    """What a stream's token must be bound to: the CallSid and the name of the profile the call was answered with
    (calls answered by a voice webhook: the called number picks the profile, so a stream that presents another
    ``to`` than its webhook saw is refused), or, for a stream carrying an ``outbound`` parameter, that id and a
    digest of all its other parameters, ``profile`` included (empty ones left out, since ``connect_stream`` leaves
    empty values out of the TwiML and Twilio then does not send them)."""
    outbound_id = parameters.get(OUTBOUND_PARAM)
    if not outbound_id:
        return f"{call_sid}|{profile}"
    signed = {k: v for k, v in parameters.items() if k not in ("token", OUTBOUND_PARAM) and v}
    digest = hashlib.sha256(json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    return f"outbound|{outbound_id}|{digest}"


def variables_from_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    """The call variables a stream's ``start.customParameters`` carry (only for outbound-bound tokens: the caller of
    this function checks that)."""
    return {k[len(VAR_PREFIX) :]: v for k, v in parameters.items() if k.startswith(VAR_PREFIX)}
