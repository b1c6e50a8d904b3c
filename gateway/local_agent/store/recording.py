"""A session's stereo recording as it is made: the caller on the left, the agent on the right. Pure (bytes and
times in, interleaved PCM16 frames out; no clock, no file).

Both tracks are placed on the session's clock (seconds since it opened, passed in), at the recording's rate, which is
the session's output rate so agent audio is never resampled (24 kHz for PCM, 8 kHz for G.711;
docs/reference/local-agent-api.md#recording):

- the caller's audio runs contiguously from chunk to chunk, as a microphone delivers it; only a real gap (a chunk
  arriving more than ``gap_s`` after the previous one ended, e.g. while the socket was away before a resume) is
  kept as silence;
- the agent's audio goes where the client plays it (the speaker's playout clock); at a barge-in the client throws
  away what it had not played yet, and :meth:`StereoRecording.agent_cut` does the same to the right track.

:meth:`StereoRecording.take` hands back the frames older than ``hold_s``, so audio placed a little late still lands;
anything placed before what was already taken is dropped and counted (``late_frames``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BYTES_PER_FRAME", "StereoRecording", "audible_pcm"]

BYTES_PER_FRAME = 4  # two PCM16 samples


def audible_pcm(pcm: bytes, threshold: int = 300) -> bool:
    """Any sample above ``threshold`` (about -40 dBFS), as the first-audio latency figure counts it."""
    return len(pcm) >= 2 and int(np.abs(np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")).max()) > threshold


class StereoRecording:
    """The part of a stereo recording not handed out yet: two mono PCM16 tracks from frame ``base`` on."""

    def __init__(self, rate: int, *, hold_s: float = 2.0, gap_s: float = 0.25) -> None:
        self.rate = rate
        self.hold_frames = round(hold_s * rate)
        self.gap_frames = round(gap_s * rate)
        self.base = 0  # frames handed out so far
        self.late_frames = 0
        self._left = bytearray()  # the caller, PCM16 from frame `base`
        self._right = bytearray()  # the agent
        self._user_end = 0  # frame where the caller's audio so far ends

    def _place(self, track: bytearray, start: int, pcm: bytes) -> None:
        off = start - self.base
        if off < 0:
            self.late_frames += min(-off, len(pcm) // 2)
            pcm = pcm[-off * 2 :]
            off = 0
        if not pcm:
            return
        end = off * 2 + len(pcm)
        if len(track) < end:
            track.extend(bytes(end - len(track)))
        track[off * 2 : end] = pcm

    def user(self, pcm: bytes, arrived_s: float) -> None:
        """Caller audio (PCM16 at ``rate``) that arrived at ``arrived_s``."""
        n = len(pcm) // 2
        start = round(arrived_s * self.rate) - n
        if start <= self._user_end + self.gap_frames:
            start = self._user_end
        self._place(self._left, start, pcm)
        self._user_end = start + n

    def agent(self, pcm: bytes, plays_at_s: float) -> None:
        """Agent audio (PCM16 at ``rate``) the client plays from ``plays_at_s``."""
        self._place(self._right, max(0, round(plays_at_s * self.rate)), pcm)

    def agent_cut(self, at_s: float) -> None:
        """The client flushed its playback at ``at_s`` (an interrupted reply): agent audio placed after it goes."""
        off = max(0, round(at_s * self.rate) - self.base)
        del self._right[off * 2 :]

    def take(self, now_s: float | None = None) -> bytes:
        """Interleaved stereo frames up to ``now_s - hold_s`` (silence where neither track had audio), or, with
        ``now_s=None`` (the session ended), everything placed so far."""
        if now_s is None:
            count = max(len(self._left), len(self._right)) // 2
        else:
            count = round(now_s * self.rate) - self.hold_frames - self.base
        if count <= 0:
            return b""
        stereo = np.zeros(2 * count, dtype="<i2")
        for channel, track in ((0, self._left), (1, self._right)):
            have = min(len(track) // 2, count)
            if have:
                stereo[channel : 2 * have : 2] = np.frombuffer(track, dtype="<i2", count=have)
            del track[: have * 2]
        self.base += count
        return stereo.tobytes()
