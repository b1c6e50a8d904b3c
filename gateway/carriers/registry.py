"""Which carriers the gateway speaks. Pure.

:class:`~gateway.carriers.twilio.TwilioDialect` is re-exported here for the call session, which defaults to it.
"""

from __future__ import annotations

from .twilio import TwilioDialect

__all__ = ["TwilioDialect"]
