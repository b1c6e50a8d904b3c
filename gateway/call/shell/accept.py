"""Stream acceptance: wait for the carrier's ``start``, verify the stream's per-call token, take the call's slot.
Not pure: it reads the carrier socket and the wall clock (token expiry).

The result is complete (:class:`Acceptance`: the :class:`~gateway.call.setup.CallSetup` and, for a stream that was
authorized but cannot be served, the outcome to end it with after the apology), or an exception:
:class:`~gateway.errors.UnauthorizedStream` (no valid token, or a token already carrying a live call: the stream is
closed with 1008 and never spoken to), :class:`~gateway.errors.CallEnded` (``no_start`` within
``server.start_timeout_s``, ``carrier_closed``), :class:`~gateway.errors.CarrierProtocolError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from ...carriers.base import Dialect
from ...carriers.events import StreamConnected, StreamStarted
from ...config import Settings
from ...errors import CallEnded, CarrierProtocolError, Outcome, UnauthorizedStream
from ...outbound import token_subject
from ...reattach import HandedOver
from ...security import TokenError, verify_call_token
from ..setup import CallSetup, profile_name_for, setup_for
from .carrier import CarrierTransport

__all__ = ["Acceptance", "Handover", "SharedAdmit", "authorize", "await_start"]

#: Takes over the call's agent session parked on another replica (gateway.cluster), or None if there is none.
Handover = Callable[[], Awaitable[HandedOver | None]]
#: The cluster's half of admission, after this process admitted the stream: ``(start, token, profile name)`` →
#: (refusal or None, a :data:`Handover` when another replica held the call). Refusals: ``token_in_use`` (the token
#: opened a call on another replica), ``store_unavailable`` (``state.on_unavailable = "refuse"``).
SharedAdmit = Callable[[StreamStarted, str, str], Awaitable[tuple[str | None, Handover | None]]]

log = structlog.get_logger("gateway.call")


@dataclass(frozen=True, slots=True)
class Acceptance:
    """An authorized stream. ``refusal``: admission turned it away after all (``at_capacity``, ``draining``); the
    caller hears the apology, then the call ends with that outcome."""

    setup: CallSetup
    refusal: Outcome | None = None


async def await_start(carrier: CarrierTransport, dialect: Dialect, timeout: float) -> StreamStarted:
    """The stream's ``start`` (``connected`` may come first), within ``server.start_timeout_s``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                for ev in dialect.parse(await carrier.receive()):
                    if isinstance(ev, StreamStarted):
                        return ev
                    if not isinstance(ev, StreamConnected):  # pragma: no cover - dialect raises first
                        raise CarrierProtocolError(f"{type(ev).__name__} before start")
    except TimeoutError:
        raise CallEnded(Outcome.NO_START) from None


def authorize(
    start: StreamStarted, settings: Settings, *, scope: str, now: float, admit: Callable[[str, str], str | None] | None
) -> Acceptance:
    """``scope``: the stream door (its token must have been minted there); ``now``: wall-clock seconds (token
    expiry). ``admit(call_sid, token)``: None to admit, or a refusal (gateway.admission: ``token_in_use`` →
    refused, ``at_capacity`` → apology and hang-up)."""
    structlog.contextvars.bind_contextvars(call_sid=start.call_id, stream_sid=start.stream_id)
    params = start.custom_parameters
    token = params.get("token")
    try:
        verify_call_token(
            settings.secrets.token_secret,
            token,
            token_subject(params, start.call_id, profile_name_for(settings, params)),
            now,
            scope=scope,
        )
    except TokenError as exc:
        raise UnauthorizedStream(f"call token {exc}") from None
    assert token is not None  # verified above
    setup = setup_for(settings, start)
    refusal = admit(start.call_id, token) if admit is not None else None
    if refusal == "token_in_use":
        # A replayed token: it already opened a call on this process (gateway.admission).
        raise UnauthorizedStream("call token already used (a token opens one call, once)")
    if refusal is not None:
        log.warning("call.refused", reason=refusal)
        return Acceptance(setup, Outcome(refusal))
    return Acceptance(setup)


async def admit_shared(start: StreamStarted, acceptance: Acceptance, shared: SharedAdmit) -> Handover | None:
    """The cluster's half of admission for a stream :func:`authorize` admitted here. A token already used on another
    replica, or a store that is down under ``state.on_unavailable = "refuse"``, raises UnauthorizedStream."""
    token = start.custom_parameters.get("token", "")
    refusal, handover = await shared(start, token, acceptance.setup.profile_name)
    if refusal == "token_in_use":
        raise UnauthorizedStream("call token already used on another replica (a token opens one call, once)")
    if refusal is not None:
        raise UnauthorizedStream(f"refused: {refusal} (state.on_unavailable = refuse)")
    return handover
