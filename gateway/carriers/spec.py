"""What a carrier is to the gateway: a declarative description (:class:`CarrierSpec`) plus its dialect. Pure.

Each carrier's module (``gateway/carriers/<name>.py``) declares one ``SPEC``: its routes, its ``[carriers.NAME]``
settings table, the environment variables of its secrets, and pure functions for what differs between carriers (how
its webhook is verified and read, what its answer and its busy answer look like, how its stream upgrade is checked
and which dialect speaks its stream). :mod:`gateway.carriers.registry` lists the specs; one generic webhook handler
and one generic stream handler (:mod:`gateway.carrier_routes`) serve every carrier from them, and the config
(:mod:`gateway.config`) builds each carrier's table and reads its secrets from them.
docs/how-to/carriers/adding-a-carrier.md walks through adding one.

A webhook is handled in this order (the glue's side in :mod:`gateway.carrier_routes`):

1. read the request into a :class:`Webhook`: the raw body first if the carrier signs it as bytes
   (``signs_raw_body``), else the decoded body (``webhook_body``: a form or JSON; undecodable is a 400);
2. with the carrier's secret set (:attr:`CarrierSpec.authenticated`), ``verify`` it: a :class:`Refusal` is logged
   (``webhook.refused``), counted and answered;
3. ``read_call``: the call's id and numbers, or :class:`Malformed` (a 400, not logged);
4. reserve a call slot (:mod:`gateway.admission`); refused: the carrier's ``busy`` answer;
5. mint the call's stream token for this door (docs/security.md, "Per-call tokens") and ``answer``.

A stream upgrade: with the secret set, ``check_upgrade`` (a :class:`Refusal` is ``stream.refused``); then the
carrier's ``dialect`` for it, served by :func:`gateway.media_stream.serve_stream` with the door's token scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .base import Dialect

__all__ = [
    "BUSY",
    "DRAINING",
    "Answer",
    "AnswerContext",
    "Call",
    "CarrierDoor",
    "CarrierSpec",
    "Door",
    "Malformed",
    "Refusal",
    "Secret",
    "Upgrade",
    "Webhook",
]

#: What a refused caller hears: all lines busy (the call limit), or the process draining for a restart.
BUSY = "Sorry, all our lines are busy. Please call again in a few minutes."
DRAINING = "Sorry, we can't take your call right now. Please call again shortly."


@dataclass(frozen=True)
class CarrierDoor:
    """``[carriers.NAME]``: whether that carrier's webhook and stream routes exist (docs/security.md, "Carrier
    doors"). Every carrier's table has this key; a carrier's module subclasses this class with its own keys.

    ``enabled``: ``"auto"`` (default): open when the carrier's secret is set, and, in development only (no public
    URL), also without it, with a loud warning at start-up. ``true``: open; without its secret this is refused at
    start-up when a public URL is set (anyone could open agent sessions), and warned about otherwise. ``false``:
    closed (404) even with the secret set."""

    enabled: bool | str = "auto"


OptionsT = TypeVar("OptionsT", bound=CarrierDoor)


@dataclass(frozen=True)
class Door(Generic[OptionsT]):
    """One carrier's configuration as its pure functions see it: its ``[carriers.NAME]`` table and its secrets (by
    :attr:`Secret.key`, empty when unset)."""

    options: OptionsT
    secrets: Mapping[str, str] = field(default_factory=dict)

    def secret(self, key: str) -> str:
        return self.secrets.get(key, "")


@dataclass(frozen=True)
class Secret:
    """One secret of a carrier: ``key`` as its functions look it up (:meth:`Door.secret`), ``env`` the environment
    variable it is read from (secrets never come from the config file)."""

    key: str
    env: str


@dataclass(frozen=True)
class Webhook:
    """A webhook request, read by the generic handler. ``url`` is the URL the carrier signed
    (:func:`gateway.urls.webhook_url`); ``body`` the raw body when the carrier signs it as bytes (else empty);
    ``form`` every value of every form field ({} unless the body is a form); ``json`` the decoded JSON body when
    ``json_sent``; ``now`` wall-clock seconds, for signatures with a replay window."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes = b""
    form: Mapping[str, list[str]] = field(default_factory=dict)
    json: Any = None
    json_sent: bool = False
    remote: str | None = None
    now: float = 0.0

    def field(self, name: str) -> str:
        """The first value of a form field, or ``""``."""
        values = self.form.get(name)
        return values[0] if values else ""


@dataclass(frozen=True)
class Upgrade:
    """A stream upgrade request. ``url``: the stream URL as the answer wrote it (public or loopback, no query:
    what an upgrade signature covers); ``path_params``: the route's variables (``/plivo/stream/{token}``)."""

    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    path_params: Mapping[str, str] = field(default_factory=dict)
    remote: str | None = None


@dataclass(frozen=True)
class Call:
    """What a webhook says about its call. ``called``: the called number exactly as the stream will present it
    (``to``), which picks the profile the token is bound to; ``caller`` likewise."""

    call_id: str
    called: str = ""
    caller: str = ""


@dataclass(frozen=True)
class AnswerContext(Generic[OptionsT]):
    """What an answer needs beyond the call: the stream token minted for this call at this door, where streams are
    opened (``stream_base``: ``wss://<public host>[/prefix]`` or this listener's ``ws://`` address, without the
    route's path), the carrier's settings and, if it asks for them, the status callback URL."""

    token: str
    stream_base: str
    options: OptionsT
    status_callback: str | None = None


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to a webhook."""

    body: str
    content_type: str = "application/xml"
    status: int = 200


@dataclass(frozen=True)
class Refusal:
    """A request that is not the carrier's: logged (``webhook.refused`` / ``stream.refused``, ``reason``), counted
    (``call_refusals_total``, ``reason`` with underscores for spaces) and answered ``status`` with ``text``."""

    reason: str
    text: str = ""
    status: int = 403


@dataclass(frozen=True)
class Malformed:
    """A request we cannot read: 400 with ``text``, not logged (the sender's fault;
    docs/security.md#malformed-input)."""

    text: str


def _any_secret(door: Door[Any]) -> bool:
    return any(door.secrets.values())


def _no_problems(door: Door[Any]) -> Iterable[tuple[str, str]]:
    return ()


def _no_upgrade_check(upgrade: Upgrade, door: Door[Any]) -> Refusal | None:
    return None


@dataclass(frozen=True)
class CarrierSpec(Generic[OptionsT]):
    """One carrier, declared once (see the module docstring for the order in which the functions run).

    Routes: ``webhook_path`` answered for each of ``webhook_methods``; ``stream_path`` (an aiohttp route, variables
    allowed) upgraded to the media stream. ``webhook_body``: ``"form"``, ``"json"`` (decoded only on a POST with a
    body) or ``"none"`` (query only). ``status_callbacks``: its answer asks for status callbacks
    (``POST /twilio/status``, :mod:`gateway.call_control_http`). ``call_control``: which call control it offers
    beyond its stream (``"twilio_rest"``, ``"laml_rest"``, ``"telnyx_call_control"``, ``"plivo_rest"``: its client in
    :mod:`gateway.control`), or None. ``legacy_keys``: flat ``[carriers]`` keys of older configs,
    mapped to this carrier's table (accepted with a deprecation warning). ``served_by``, ``subprotocols``: see the
    fields."""

    name: str
    options: type[OptionsT]
    secrets: tuple[Secret, ...]
    webhook_path: str
    webhook_methods: tuple[str, ...]
    stream_path: str
    webhook_body: str
    verify: Callable[[Webhook, Door[OptionsT]], Refusal | None]
    read_call: Callable[[Webhook], Call | Malformed]
    answer: Callable[[Call, AnswerContext[OptionsT]], Answer]
    busy: Callable[[str], Answer]
    dialect: Callable[[Upgrade], Dialect]
    signs_raw_body: bool = False
    check_upgrade: Callable[[Upgrade, Door[OptionsT]], Refusal | None] = _no_upgrade_check
    #: Whether a stranger is kept out of its doors: by default, whether one of its secrets is set.
    authenticated: Callable[[Door[OptionsT]], bool] = _any_secret
    #: What to set to authenticate it, for error messages; default: its secrets' variables.
    credential: str = ""
    #: Problems with its table or secrets, as (key, message) pairs: start-up refuses them.
    check: Callable[[Door[OptionsT]], Iterable[tuple[str, str]]] = _no_problems
    legacy_keys: Mapping[str, str] = field(default_factory=dict)
    status_callbacks: bool = False
    call_control: str | None = None
    #: The module that serves this carrier's doors itself, when the generic handlers cannot (AudioSocket is a TCP
    #: stream, not a WebSocket: :mod:`gateway.audiosocket_server`); empty: :mod:`gateway.carrier_routes` does.
    served_by: str = ""
    #: WebSocket subprotocols its stream selects when the carrier offers one (FreeSWITCH's mod_audio_fork offers
    #: ``audio.drachtio.org`` and its libwebsockets client wants it echoed); empty: none.
    subprotocols: tuple[str, ...] = ()

    @property
    def secret_envs(self) -> tuple[str, ...]:
        return tuple(s.env for s in self.secrets)

    def what_authenticates(self) -> str:
        return self.credential or " or ".join(self.secret_envs)

    def door(self, options: CarrierDoor, env_secrets: Mapping[str, str]) -> Door[OptionsT]:
        """This carrier's :class:`Door` from its table and the secrets read from the environment (by variable)."""
        assert isinstance(options, self.options), (self.name, options)
        return Door(options, {s.key: env_secrets.get(s.env, "") for s in self.secrets})
