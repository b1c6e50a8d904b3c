"""The agent's audio to the carrier's whole ``media`` message in one compiled step: the fused FIR encoder
(:class:`~gateway.audio.fir_jit.FusedFirEncoder`) whose lone frame also comes out base64-encoded inside the message
text around it, for carriers whose media message is a fixed text with the base64 payload in one place (Twilio's
``{"event":"media","streamSid":…,"media":{"payload":"…"}}``). Pure (no I/O, no clock).

Why: in a reply's steady state every other 10 ms agent chunk completes a 20 ms frame, and that frame went through
more Python (cut out of the encoder's buffer, base64, the message template, the text encoded again to send) before
it left. Here the encoder's compiled step, which made the frame, also writes its base64 into a per-call copy of the
message (the same kernel: an encoder without a message passes none), so the frame leaves as one ``bytes`` copy of
that buffer: what the agent reader's lane sends (gateway/call/shell/carrier.py,
``CarrierWriter.send_message``; docs/architecture/performance.md#message-lane). The same bytes as the dialect's
``build_media`` on the same frame: ``tests/unit/test_fir_message.py``.
"""

from __future__ import annotations

import numpy as np

from .fir_jit import _DOWN_PHASES, AVAILABLE, FusedFirEncoder

if AVAILABLE:
    from .fir_jit import _DOWN_ENCODE

__all__ = ["FusedFirMessages", "b64_length"]


def b64_length(n: int) -> int:
    """The base64 text of ``n`` bytes, with its padding."""
    return -(-n // 3) * 4


class FusedFirMessages(FusedFirEncoder):
    """:class:`~gateway.audio.fir_jit.FusedFirEncoder` (``convert``, ``flush``, ``reset`` unchanged) plus
    :meth:`message`, once :meth:`template` gave it the carrier's message around a payload. Both share one filter
    state: a call may take either for any chunk."""

    __slots__ = ("_msg_view",)

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
        ``convert`` gives them: none (the chunk completes no frame) or several. (``convert``'s steps, repeated here
        rather than shared through a helper: that would be one more Python call on every chunk.)"""
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
        k, self._need = _DOWN_ENCODE(
            self._hist, self._st, data, _DOWN_PHASES, self._law, self._out, self._msg, self._at
        )
        if k == 1:  # the steady state
            return self._msg_view.tobytes()
        return self._frames(k, data)

    def frame(self) -> bytes:
        """The frame the last :meth:`message` that returned a message carried."""
        return self._first.tobytes()
