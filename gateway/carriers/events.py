"""The carrier-neutral event model every dialect parses into. Pure, frozen dataclasses named as nouns (the one
that comes 50 times a second per call, :class:`AudioReceived`, a frozen ``msgspec.Struct``: the same fields, equality
and pattern matching, built in C at a quarter of a frozen dataclass's cost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The socket is up; the carrier has not said which call it carries yet."""

    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """Which call this stream carries, and its audio format."""

    stream_id: str
    call_id: str
    account_id: str
    encoding: str  # as the agent protocol names it: "audio/pcmu", "audio/pcma", "audio/pcm"
    sample_rate: int
    channels: int = 1
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


class AudioReceived(msgspec.Struct, frozen=True):
    """Caller audio in the stream's encoding (raw bytes, base64 already decoded)."""

    payload: bytes
    timestamp_ms: int | None = None
    chunk: int | None = None


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class PlaybackCheckpoint:
    """The carrier reports that everything sent before the named mark has played (or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class PlaybackCleared:
    """The carrier acknowledges a ``clear``: its playout queue is empty now (Plivo ``clearedAudio``, Vonage
    ``websocket:cleared``; docs/how-to/carriers/index.md#comparison). Twilio-style carriers send no such
    acknowledgement: for them the session takes the ``clear`` as effective when sent, and flushed mark echoes of the
    cleared generation are recognised by the playout tracker instead."""


@dataclass(frozen=True, slots=True)
class StreamError:
    """The carrier reports a stream-level error without ending the stream (Telnyx ``error`` frame,
    docs/how-to/carriers/telnyx.md#protocol)."""

    code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MediaFault:
    """A media payload that is not what the carrier's docs say one is (docs/how-to/carriers/index.md#media-faults):
    ``reason`` empty | odd_length | mis_sized, ``size`` its bytes, ``refused`` whether it was dropped (else it was
    passed on, and counted). A dialect reports the first of each reason per stream; it counts them all in its
    ``media_faults``."""

    reason: str
    size: int
    refused: bool


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The carrier ended the stream (caller hung up, redirect, stop)."""

    call_id: str = ""


CarrierEvent = (
    StreamConnected
    | StreamStarted
    | AudioReceived
    | DtmfReceived
    | PlaybackCheckpoint
    | PlaybackCleared
    | StreamError
    | MediaFault
    | StreamStopped
)
