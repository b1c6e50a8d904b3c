"""DTMF (ITU-T Q.23 / Q.24): dual-tone synthesis and a Goertzel detector. Pure: bytes in, bytes or digits out.

Why synthesise: a Twilio bidirectional stream has no "send digits" message, and sending DTMF by REST redirect (``<Play
digits>``) tears the media stream down (docs/architecture/twilio-media-streams.md#transfer). So ``send_dtmf`` plays the
tones as ordinary outbound audio, the way vocode's ``DTMFToneGenerator`` does: 8 kHz μ-law, ``tone_ms`` of the two
frequencies summed, then ``gap_ms`` of silence, per digit.

Why detect: Twilio reports the caller's keypresses as ``dtmf`` events, so the gateway needs no in-band detector on
the call path. :class:`DtmfDetector` is here to check what we send (tests decode our own tones back to digits) and
for carriers without a ``dtmf`` event. It runs the Goertzel recurrence for the eight DTMF frequencies over blocks
of 205 samples at 8 kHz (25.6 ms, the classic block size whose bins fall near the DTMF frequencies), and accepts a
block as a digit when one row and one column tone stand out (relative peak, twist and share of block energy). A
digit is reported once when it is present in two consecutive blocks, and may repeat only after two blocks without
it, so one noisy block neither splits nor doubles a digit.
"""

from __future__ import annotations

import math

import numpy as np

from . import g711

__all__ = [
    "DIGITS",
    "ROW_HZ",
    "COL_HZ",
    "frequencies",
    "tones_pcm16",
    "tones_ulaw",
    "tones_duration_ms",
    "tones_for_carrier",
    "DtmfDetector",
    "decode_pcm16",
    "decode_ulaw",
]

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
#: Every DTMF symbol, in keypad order.
DIGITS = "".join(_KEYPAD)

#: Default level of each of the two tones, as a fraction of full scale (about -10.5 dBFS each; Q.23 sends the pair
#: between -3 and -10 dBm0, and a call's μ-law is ~3 dB hotter than dBm0 at full scale).
TONE_LEVEL = 0.3


def frequencies(digit: str) -> tuple[float, float]:
    """(row Hz, column Hz) of one DTMF symbol (``0``–``9``, ``*``, ``#``, ``A``–``D``; case-insensitive)."""
    d = digit.upper()
    for r, row in enumerate(_KEYPAD):
        c = row.find(d)
        if c >= 0 and len(d) == 1:
            return ROW_HZ[r], COL_HZ[c]
    raise ValueError(f"{digit!r} is not a DTMF digit")


def tones_pcm16(
    digits: str, *, rate: int = 8000, tone_ms: int = 100, gap_ms: int = 100, level: float = TONE_LEVEL
) -> bytes:
    """16-bit little-endian PCM: each digit as ``tone_ms`` of its two tones then ``gap_ms`` of silence. The phase
    restarts per digit and each tone burst is whole samples; no ramp is needed at these levels (the detector and
    the carrier's own DTMF detection both tolerate the onset click)."""
    n_tone = rate * tone_ms // 1000
    n_gap = rate * gap_ms // 1000
    t = np.arange(n_tone) / rate
    out = []
    silence = np.zeros(n_gap)
    for d in digits:
        lo, hi = frequencies(d)
        burst = level * (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t))
        out.append(burst)
        out.append(silence)
    if not out:
        return b""
    x = np.concatenate(out)
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def tones_ulaw(
    digits: str, *, tone_ms: int = 100, gap_ms: int = 100, frame_bytes: int = 160, level: float = TONE_LEVEL
) -> bytes:
    """8 kHz μ-law tones for ``digits``, padded with μ-law silence to whole ``frame_bytes`` frames (the unit the
    outbound path sends in)."""
    ulaw = g711.pcm16_to_ulaw(tones_pcm16(digits, rate=8000, tone_ms=tone_ms, gap_ms=gap_ms, level=level))
    pad = (-len(ulaw)) % frame_bytes
    return ulaw + bytes([g711.ULAW_SILENCE]) * pad


def tones_for_carrier(
    digits: str, encoding: str, sample_rate: int, frame_bytes: int, *, tone_ms: int = 100, gap_ms: int = 100
) -> list[bytes]:
    """The tones as whole outbound frames of a carrier stream's own format: ``audio/pcmu`` or ``audio/pcma`` at
    8 kHz, or ``audio/pcm`` (16-bit little-endian) at ``sample_rate``. The last frame is padded with silence."""
    if encoding == "audio/pcmu" and sample_rate == 8000:
        data = tones_ulaw(digits, tone_ms=tone_ms, gap_ms=gap_ms, frame_bytes=frame_bytes)
    elif encoding == "audio/pcma" and sample_rate == 8000:
        data = g711.pcm16_to_alaw(tones_pcm16(digits, tone_ms=tone_ms, gap_ms=gap_ms))
        data += bytes([g711.ALAW_SILENCE]) * ((-len(data)) % frame_bytes)
    elif encoding == "audio/pcm":
        data = tones_pcm16(digits, rate=sample_rate, tone_ms=tone_ms, gap_ms=gap_ms)
        data += b"\x00" * ((-len(data)) % frame_bytes)
    else:
        raise ValueError(f"no DTMF tones for {encoding!r} at {sample_rate} Hz")
    return [data[i : i + frame_bytes] for i in range(0, len(data), frame_bytes)]


def tones_duration_ms(digits: str, *, tone_ms: int = 100, gap_ms: int = 100) -> int:
    return len(digits) * (tone_ms + gap_ms)


class DtmfDetector:
    """Streaming DTMF detector over 16-bit PCM. ``feed`` any amount of audio; it returns the digits completed so
    far. Thresholds (relative, so independent of level above ``min_rms``):

    - ``min_rms``: blocks quieter than this (on the 16-bit scale) are silence;
    - ``peak_ratio``: the strongest row (column) tone must exceed the other rows (columns) by this power ratio;
    - ``max_twist``: the row/column power ratio must stay within 1/max_twist … max_twist;
    - ``min_share``: the two tones must hold this share of the block's energy (noise and speech spread it out).
    """

    def __init__(
        self,
        rate: int = 8000,
        *,
        min_rms: float = 300.0,
        peak_ratio: float = 4.0,
        max_twist: float = 10.0,
        min_share: float = 0.5,
    ) -> None:
        self.rate = rate
        self.block = max(32, round(205 * rate / 8000))
        self._coeff = np.array([2.0 * math.cos(2.0 * math.pi * f / rate) for f in (*ROW_HZ, *COL_HZ)])
        self._min_energy = (min_rms**2) * self.block
        self._peak_ratio = peak_ratio
        self._max_twist = max_twist
        self._min_share = min_share
        self._pending = np.zeros(0)
        self._candidate: str | None = None  # the symbol seen in the previous block
        self._active: str | None = None  # the symbol reported and still held
        self._absent = 0  # consecutive blocks without the active symbol

    def feed(self, pcm16: bytes) -> list[str]:
        x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
        buf = np.concatenate((self._pending, x)) if len(self._pending) else x
        out: list[str] = []
        n = self.block
        full = len(buf) // n
        for i in range(full):
            d = self._step(self.classify(buf[i * n : (i + 1) * n]))
            if d is not None:
                out.append(d)
        self._pending = buf[full * n :].copy()
        return out

    def classify(self, block: np.ndarray) -> str | None:
        """The symbol one block of samples carries, or None."""
        energy = float(np.dot(block, block))
        if energy < self._min_energy:
            return None
        power = self._goertzel(block)
        rows, cols = power[:4], power[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        pr, pc = float(rows[r]), float(cols[c])
        if pr <= 0 or pc <= 0:
            return None
        if any(float(rows[i]) * self._peak_ratio > pr for i in range(4) if i != r):
            return None
        if any(float(cols[i]) * self._peak_ratio > pc for i in range(4) if i != c):
            return None
        if not (1.0 / self._max_twist <= pr / pc <= self._max_twist):
            return None
        # A pure tone of amplitude A over N samples has Goertzel power (A·N/2)² and energy A²·N/2: power / energy
        # is N/2 for each tone, so the pair's share of the block energy is (pr + pc) / (energy · N / 2).
        share = (pr + pc) / (energy * len(block) / 2.0)
        if share < self._min_share:
            return None
        return _KEYPAD[r][c]

    def _goertzel(self, block: np.ndarray) -> np.ndarray:
        """Goertzel recurrence s[n] = x[n] + 2cos(ω)·s[n-1] − s[n-2] for all eight frequencies at once; power is
        s[N-1]² + s[N-2]² − 2cos(ω)·s[N-1]·s[N-2]."""
        coeff = self._coeff
        s1 = np.zeros(8)
        s2 = np.zeros(8)
        for v in block:
            s0 = v + coeff * s1 - s2
            s2 = s1
            s1 = s0
        result: np.ndarray = s1 * s1 + s2 * s2 - coeff * s1 * s2
        return result

    def _step(self, symbol: str | None) -> str | None:
        reported = None
        if symbol is not None and symbol == self._candidate and symbol != self._active:
            self._active = symbol
            self._absent = 0
            reported = symbol
        elif self._active is not None:
            if symbol == self._active:
                self._absent = 0
            else:
                self._absent += 1
                if self._absent >= 2:
                    self._active = None
        self._candidate = symbol
        return reported


def decode_pcm16(pcm16: bytes, rate: int = 8000) -> str:
    """Every digit in a stretch of 16-bit PCM."""
    return "".join(DtmfDetector(rate).feed(pcm16))


def decode_ulaw(data: bytes) -> str:
    """Every digit in a stretch of 8 kHz μ-law."""
    return decode_pcm16(g711.ulaw_to_pcm16(data), 8000)
