"""Hold audio, sans I/O (docs/how-to/conversation.md#hold-audio). Pure.

While a tool runs longer than ``hold_audio.after_ms`` (a ``hold``-mode tool: from its start), the caller hears a soft
looped sound instead of dead air. :class:`HoldLoop` hands out the loop's frames, in the stream's own format, a few
at a time: the call core keeps only :data:`HOLD_TOP_UP` frames of it queued for the carrier, so the single carrier
writer paces it like agent audio and stopping it drops at most that much here (plus the carrier's playout lead,
which a ``clear`` drops there). It is sent to the carrier only, never to the agent, and every start and stop is a
``call.hold_audio`` event.
"""

from __future__ import annotations

from ..carriers.base import FRAME_MS

__all__ = ["HOLD_NO_REPLY_S", "HOLD_TAG", "HOLD_TOP_UP", "HoldLoop"]

#: The outbound queue's tag for hold audio (marks and playout accounting tell it from the agent's replies).
HOLD_TAG = "__hold__"
#: Frames of hold audio kept queued ahead of the pacing (100 ms): what is dropped here when it stops.
HOLD_TOP_UP = 5
#: Once every tool finished, hold audio waits at most this long for the agent's reply before it stops.
HOLD_NO_REPLY_S = 8.0


class HoldLoop:
    """The hold sound, looped, as whole frames in the stream's format."""

    def __init__(self, frames: list[bytes]) -> None:
        if not frames:
            raise ValueError("hold audio needs at least one frame")
        self._frames = frames
        self._pos = 0
        self.sent = 0  # frames handed out

    def next(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        frames, pos = self._frames, self._pos
        for _ in range(n):
            out.append(frames[pos])
            pos = pos + 1 if pos + 1 < len(frames) else 0
        self._pos = pos
        self.sent += n
        return out

    @property
    def sent_ms(self) -> int:
        return self.sent * FRAME_MS
