"""One phone call. Kept for compatibility: the call lives in :mod:`gateway.call` now (the pure core in
:mod:`gateway.call.core`, the asyncio shell in :mod:`gateway.call.shell.session`); the app, the drain and the
benchmark's floor prototype import these names from here."""

from __future__ import annotations

from .call.core import PROMPT_ECHO_SLACK_S
from .call.shell.session import CallSession
from .call.stats import CallSummary

__all__ = ["PROMPT_ECHO_SLACK_S", "CallSession", "CallSummary"]
