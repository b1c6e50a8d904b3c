"""An outbound call placed with answering-machine detection, while the detection runs (docs/how-to/conversation.md
#voicemail). Pure.

Until Twilio's verdict (:mod:`gateway.amd`) the call holds both directions: the agent's audio waits here instead of
playing over a machine's greeting, and the callee's audio waits in the core's caller buffer instead of reaching the
agent (which would answer the greeting). A human (or no verdict within ``voicemail.beep_timeout_s``): everything held
goes on, a second or two late. A machine whose greeting ended (the beep): what was held is dropped and the agent
leaves the profile's ``voicemail.message``.
"""

from __future__ import annotations

__all__ = ["MachineGate"]


class MachineGate:
    """The held agent audio, bounded to ``max_frames`` (the newest beyond it are dropped, counted in ``dropped``)."""

    def __init__(self, deadline: float, max_frames: int) -> None:
        self.deadline = deadline
        self._max = max_frames
        self._held: list[tuple[str | None, list[bytes] | None]] = []  # frames, or None: the reply's end mark
        self._frames = 0
        self.dropped = 0

    def hold(self, reply_id: str | None, frames: list[bytes]) -> None:
        room = self._max - self._frames
        if room <= 0:
            self.dropped += len(frames)
            return
        kept = frames[:room]
        self.dropped += len(frames) - len(kept)
        self._held.append((reply_id, kept))
        self._frames += len(kept)

    def hold_mark(self, reply_id: str | None) -> None:
        """The end of a reply: its mark is queued after its audio once released."""
        self._held.append((reply_id, None))

    def release(self) -> list[tuple[str | None, list[bytes] | None]]:
        """A human: the held audio, in order, to play now."""
        held, self._held, self._frames = self._held, [], 0
        return held

    def discard(self) -> set[str | None]:
        """A machine: forget the held audio; the replies it belonged to (they must not play on)."""
        replies = {reply_id for reply_id, _ in self._held}
        self._held, self._frames = [], 0
        return replies
