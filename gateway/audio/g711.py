"""G.711 μ-law and A-law ⇄ 16-bit linear PCM (little-endian, mono). Pure.

Uses the C implementation from the stdlib ``audioop`` (Python < 3.13) or its drop-in ``audioop-lts`` (≥ 3.13), so
the bytes match what carriers and ``audioop``-based peers produce bit for bit.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "ULAW_SILENCE",
    "ALAW_SILENCE",
    "ulaw_to_pcm16",
    "pcm16_to_ulaw",
    "alaw_to_pcm16",
    "pcm16_to_alaw",
]

#: One byte of digital silence in each law (what a quiet line carries).
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    return audioop.lin2ulaw(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    return audioop.alaw2lin(data, 2)


def pcm16_to_alaw(data: bytes) -> bytes:
    return audioop.lin2alaw(data, 2)
