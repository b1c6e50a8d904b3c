"""structlog set-up: JSON lines by default (``LOG_FORMAT=json``), coloured console for humans (``console``).

Event names and keys are stable (docs/reference/logs.md); a call's logger is bound with call_sid/stream_sid/session_id
so every line can be joined. Phone numbers are masked with :func:`mask_number` before they are logged.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "mask_number"]


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def mask_number(number: str | None) -> str:
    """'+15551234567' -> '+1555***4567': enough to recognise a caller in support, not enough to dial them."""
    if not number:
        return ""
    if len(number) <= 6:
        return "***"
    return number[:5] + "***" + number[-4:]
