"""The agent's audio to the carrier's whole ``media`` message in one compiled step: the fused FIR encoder
(:class:`~gateway.audio.fir_jit.FusedFirEncoder`) whose lone frame also comes out base64-encoded inside the message
text around it, for carriers whose media message is a fixed text with the base64 payload in one place (Twilio's
``{"event":"media","streamSid":…,"media":{"payload":"…"}}``). Pure (no I/O, no clock).

Why: in a reply's steady state every other 10 ms agent chunk completes a 20 ms frame, and that frame went through
three more Python steps (cut out of the encoder's buffer, base64, the message template) before the queue's. Here the
kernel that makes the frame writes its base64 into a per-call copy of the message, so the frame leaves as one
``bytes`` copy of that buffer: what the agent reader's lane sends (gateway/call/shell/carrier.py,
``CarrierWriter.send_message``; docs/architecture/performance.md#message-lane). The same bytes as the dialect's
``build_media`` on the same frame: ``tests/unit/test_fir_message.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fir_jit import _DOWN_PHASES, _ST_SIZE, AVAILABLE, FusedFirEncoder

__all__ = ["FusedFirMessages", "b64_length"]

#: The standard base64 alphabet (RFC 4648, section 4), as the carriers' JSON carries it.
_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8).copy()
_PAD = ord("=")


def b64_length(n: int) -> int:
    """The base64 text of ``n`` bytes, with its padding."""
    return -(-n // 3) * 4


def _kernel() -> Any:
    from numba import njit

    from .fir_jit import ENCODE_CHUNK

    @njit(cache=True, inline="always")
    def b64_into(src: Any, n: int, dst: Any, at: int) -> None:
        # src[:n] as padded base64 at dst[at:]: three bytes to four letters, then the one or two left over.
        i, o = 0, at
        while i + 3 <= n:
            v = (int(src[i]) << 16) | (int(src[i + 1]) << 8) | int(src[i + 2])
            dst[o] = _ALPHABET[v >> 18]
            dst[o + 1] = _ALPHABET[(v >> 12) & 63]
            dst[o + 2] = _ALPHABET[(v >> 6) & 63]
            dst[o + 3] = _ALPHABET[v & 63]
            i += 3
            o += 4
        if i < n:
            v = int(src[i]) << 16
            if i + 1 < n:
                v |= int(src[i + 1]) << 8
            dst[o] = _ALPHABET[v >> 18]
            dst[o + 1] = _ALPHABET[(v >> 12) & 63]
            dst[o + 2] = _ALPHABET[(v >> 6) & 63] if i + 1 < n else _PAD
            dst[o + 3] = _PAD

    @njit(cache=True, fastmath=True)
    def encode_message(ph: Any, st: Any, pcm: Any, taps: Any, law: Any, out: Any, msg: Any, at: int) -> Any:
        # FusedFirEncoder's step; when it made exactly one frame (the steady state), that frame's base64 goes into
        # the message at ``at`` too.
        k, need = ENCODE_CHUNK(ph, st, pcm, taps, law, out)
        if k == 1:
            b64_into(out, st[_ST_SIZE], msg, at)
        return k, need

    return encode_message


if AVAILABLE:
    from .fir_jit import _ST_LEN, _compiled

    _ENCODE_MESSAGE = _compiled(
        _kernel(), np.zeros((3, 70)), np.zeros(_ST_LEN, np.int64), bytes(2), _DOWN_PHASES,
        np.zeros(16384, np.uint8), np.zeros(70, np.uint8), np.zeros(300, np.uint8), 0,
    )  # fmt: skip


class FusedFirMessages(FusedFirEncoder):
    """:class:`~gateway.audio.fir_jit.FusedFirEncoder` (``convert``, ``flush``, ``reset`` unchanged) plus
    :meth:`message`, once :meth:`template` gave it the carrier's message around a payload. Both share one filter
    state: a call may take either for any chunk."""

    __slots__ = ("_msg", "_msg_view", "_at")

    def __init__(self, carrier_encoding: str, frame_bytes: int, pad: int) -> None:
        super().__init__(carrier_encoding, frame_bytes, pad)
        self._at = -1  # no template yet

    def template(self, head: bytes, tail: bytes) -> None:
        """The carrier's media message is ``head``, the frame's base64, ``tail`` (the dialect's
        ``media_template``)."""
        buf = bytearray(head + bytes(b64_length(self.frame_bytes)) + tail)
        self._msg, self._msg_view, self._at = np.frombuffer(buf, np.uint8), memoryview(buf), len(head)

    @property
    def has_template(self) -> bool:
        return self._at >= 0

    def message(self, data: bytes) -> bytes | list[bytes]:
        """``convert(data)``, with the same state after, except that a lone frame comes back as its whole media
        message (``bytes``; :meth:`frame` gives the frame itself until the next call). Otherwise the frames, as
        ``convert`` gives them: none (the chunk completes no frame) or several."""
        held = self._held
        if held:
            data = held + data
        if len(data) < self._need:
            self._held = data  # cannot complete the next frame yet
            return []
        if len(data) & 1:  # a sample split across chunks: its first byte waits for the second
            data, self._held = data[:-1], data[-1:]
        else:
            self._held = b""
        k, self._need = _ENCODE_MESSAGE(
            self._hist, self._st, data, _DOWN_PHASES, self._law, self._out, self._msg, self._at
        )
        if k == 1:  # the steady state
            return self._msg_view.tobytes()
        return self._frames(k, data)

    def frame(self) -> bytes:
        """The frame the last :meth:`message` that returned a message carried."""
        return self._first.tobytes()
