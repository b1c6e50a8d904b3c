"""The bench's "floor" prototype (bench/prototypes/floor_session.py, scripts/bench --prototype floor): it replaces
gateway/session.py in a copied tree, so it must expose what the app imports from that module, and it must send the
same message counts as the real gateway so the load generator's frame mapping (bench/loadgen.py) stays exact.
No timing is asserted here."""

from __future__ import annotations

import ast
import dataclasses
import importlib.machinery
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

import gateway.session as real_session
from bench.loadgen import inbound_table, outbound_table
from bench.prototypes import floor_session as floor
from gateway.agent import protocol as ap
from gateway.agent.client import AgentClosed
from gateway.carriers.registry import TwilioDialect
from gateway.config import load_settings
from gateway.errors import CallEnded

ROOT = Path(__file__).resolve().parents[2]


def _bench_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_script_under_test", str(ROOT / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _names_imported_from_session() -> set[str]:
    """Every name a module of the gateway package imports from gateway.session (relative or absolute)."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if path.name == "session.py" and path.parent == ROOT / "gateway":
            continue
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "gateway.session":
                names.update(a.name for a in node.names)
    return names


def test_every_prototype_points_at_an_existing_module_and_replacement() -> None:
    prototypes = _bench_script().PROTOTYPES
    assert prototypes["floor"] == ("gateway/session.py", "bench/prototypes/floor_session.py", {})
    assert prototypes["floor-transcode"][2] == {"transcode": True}
    for target, replacement, _variant in prototypes.values():
        assert (ROOT / target).is_file(), target
        assert (ROOT / replacement).is_file(), replacement


def test_floor_exposes_every_name_the_gateway_imports_from_session() -> None:
    names = _names_imported_from_session()
    assert {"CallSession", "CallSummary", "PROMPT_ECHO_SLACK_S"} <= names  # the scan itself finds them
    missing = [n for n in names if not hasattr(floor, n)]
    assert not missing, f"bench/prototypes/floor_session.py lacks {missing}, imported from gateway.session"
    assert floor.PROMPT_ECHO_SLACK_S == real_session.PROMPT_ECHO_SLACK_S


def test_floor_call_session_takes_every_argument_of_the_real_one() -> None:
    real = inspect.signature(real_session.CallSession.__init__).parameters
    ours = inspect.signature(floor.CallSession.__init__).parameters
    assert [n for n in real if n not in ours] == []
    for name in ("run", "request_end", "shutdown"):
        assert callable(getattr(floor.CallSession, name))


def test_floor_call_summary_has_every_field_of_the_real_one() -> None:
    real = {f.name for f in dataclasses.fields(real_session.CallSummary)}
    ours = {f.name for f in dataclasses.fields(floor.CallSummary)}
    assert real - ours == set()


@pytest.mark.parametrize(("agent_format", "quality", "chunk"), [("pcm24k", "MQ", 480), ("pcmu", "MQ", 300)])
def test_outbound_schedule_maps_frames_as_the_load_generator_does(agent_format: str, quality: str, chunk: int) -> None:
    sched = floor.outbound_schedule(agent_format, quality, chunk)
    assert sum(sched) >= floor.SCHEDULE_FRAMES
    frames_to_chunk = [k for k, n in enumerate(sched) for _ in range(n)]
    assert frames_to_chunk[:3000] == outbound_table(agent_format, quality, chunk, 3000)


@pytest.mark.parametrize("agent_format", ["pcm24k", "pcmu"])
def test_inbound_sizes_are_the_load_generators_table(agent_format: str) -> None:
    sizes = floor.inbound_sizes(agent_format, "QQ")
    cumulative = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert cumulative == inbound_table(agent_format, "QQ", len(sizes))
    assert sizes[-1] == (960 if agent_format == "pcm24k" else 160)


# ---- the session's per-message behaviour, with fake sockets ------------------------------------------------------
class FakeCarrierWs:
    def __init__(self, texts: list[str]) -> None:
        self._in = [aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, t, None) for t in texts]
        self.sent: list[str] = []
        self.closed = False

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:
        if not self._in:
            return aiohttp.WSMessage(aiohttp.WSMsgType.CLOSED, None, None)
        return self._in.pop(0)

    async def send_str(self, text: str) -> None:
        self.sent.append(text)

    async def send_frame(self, message: bytes, opcode: aiohttp.WSMsgType) -> None:
        assert opcode is aiohttp.WSMsgType.TEXT  # only text frames, given as UTF-8 (the message lane's send)
        self.sent.append(message.decode())


class FakeAgent:
    def __init__(self, events: list[Any]) -> None:
        self._events = list(events)
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def recv(self) -> Any:
        if not self._events:
            raise AgentClosed(None, "")
        return self._events.pop(0)


def _session(agent_format: str, ws: FakeCarrierWs) -> floor.CallSession:
    settings = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"})
    settings = dataclasses.replace(settings, audio=dataclasses.replace(settings.audio, agent_format=agent_format))
    dialect = TwilioDialect()
    dialect.stream.stream_sid = "MZ1"
    s = floor.CallSession(ws=ws, settings=settings, endpoint=None, tools=None, dialect=dialect)  # type: ignore[arg-type]
    s.summary.stream_sid = "MZ1"
    return s


def _media(payload: str) -> str:
    return '{"event":"media","streamSid":"MZ1","media":{"track":"inbound","payload":"%s"}}' % payload


async def test_carrier_loop_sends_one_input_audio_per_media_and_ends_on_stop() -> None:
    import base64

    frames = [bytes([i]) * 160 for i in range(3)]
    texts = [_media(base64.b64encode(f).decode()) for f in frames]
    texts.insert(1, '{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}')
    texts.append('{"event":"stop","streamSid":"MZ1"}')
    # pcmu: the caller's bytes go through unchanged
    agent = FakeAgent([])
    with pytest.raises(CallEnded) as ended:
        await _session("pcmu", FakeCarrierWs(list(texts))).carrier_loop(agent)  # type: ignore[arg-type]
    assert ended.value.reason == "caller_hangup"
    assert agent.sent == [ap.input_audio(f) for f in frames]
    # pcm24k: one input.audio per media of the size the real InboundAudio would send
    agent = FakeAgent([])
    with pytest.raises(CallEnded):
        await _session("pcm24k", FakeCarrierWs(list(texts))).carrier_loop(agent)  # type: ignore[arg-type]
    quality = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"}).audio.inbound_resample_quality  # as the session
    sizes = floor.inbound_sizes("pcm24k", quality)[:3]
    assert [len(base64.b64decode(t.split('"audio":"')[1][:-2])) for t in agent.sent] == sizes


async def test_agent_loop_sends_media_on_the_real_schedule_and_clear_on_barge_in() -> None:
    quality = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"}).audio.outbound_resample_quality  # as the session
    sched = floor.outbound_schedule("pcm24k", quality, 480)
    events: list[Any] = [ap.ReplyAudio("r1", bytes(480)) for _ in range(40)]
    events.append(ap.ReplyDone("r1", "interrupted"))
    events += [ap.ReplyAudio("r2", bytes(480)) for _ in range(16)]
    events.append(ap.SessionEnded())
    ws = FakeCarrierWs([])
    s = _session("pcm24k", ws)
    with pytest.raises(CallEnded) as ended:
        await s.agent_loop(FakeAgent(events))  # type: ignore[arg-type]
    assert ended.value.reason == "agent_ended"
    clear = ws.sent.index('{"event":"clear","streamSid":"MZ1"}')
    assert clear == sum(sched[:40])  # every frame of the first reply before the clear
    assert len(ws.sent) - clear - 1 == sum(sched[:16])  # the schedule restarts with the new reply
    assert all(t.startswith('{"event":"media","streamSid":"MZ1"') for i, t in enumerate(ws.sent) if i != clear)
    assert s.summary.interruptions == 1


async def test_agent_loop_passthrough_cuts_the_agents_bytes_into_160_byte_frames() -> None:
    import base64
    import json

    audio = bytes(range(256)) * 3  # 768 B in 300 B chunks: 4 whole frames, 128 B left over
    events: list[Any] = [ap.ReplyAudio("r1", audio[i : i + 300]) for i in range(0, len(audio), 300)]
    ws = FakeCarrierWs([])
    with pytest.raises(CallEnded) as ended:
        await _session("pcmu", ws).agent_loop(FakeAgent(events))  # type: ignore[arg-type]
    assert ended.value.reason == "agent_closed"
    payloads = [base64.b64decode(json.loads(t)["media"]["payload"]) for t in ws.sent]
    assert payloads == [audio[i : i + 160] for i in range(0, 640, 160)]


async def test_floor_transcode_sends_what_the_real_converters_make(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    import numpy as np

    from gateway.audio.transcode import InboundAudio, OutboundAudio

    monkeypatch.setattr(floor, "TRANSCODE", True)  # what floor_variant.json sets for --prototype floor-transcode
    audio = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"}).audio
    rng = np.random.default_rng(3)
    # caller → agent: each media's payload through the real InboundAudio (not a canned message of its size)
    frames = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)) for _ in range(4)]
    texts = [_media(base64.b64encode(f).decode()) for f in frames] + ['{"event":"stop","streamSid":"MZ1"}']
    agent = FakeAgent([])
    with pytest.raises(CallEnded):
        await _session("pcm24k", FakeCarrierWs(texts)).carrier_loop(agent)  # type: ignore[arg-type]
    inbound = InboundAudio("audio/pcmu", 8000, "pcm24k", audio.inbound_resample_quality)
    assert agent.sent == [ap.input_audio(inbound.convert(f)) for f in frames]
    # agent → caller: the agent's chunks through the real OutboundAudio, reset at a barge-in
    chunks = [(rng.standard_normal(240) * 3000).astype("<i2").tobytes() for _ in range(12)]
    events: list[Any] = [ap.ReplyAudio("r1", c) for c in chunks[:7]] + [ap.ReplyDone("r1", "interrupted")]
    events += [ap.ReplyAudio("r2", c) for c in chunks[7:]] + [ap.SessionEnded()]
    ws = FakeCarrierWs([])
    s = _session("pcm24k", ws)
    with pytest.raises(CallEnded):
        await s.agent_loop(FakeAgent(events))  # type: ignore[arg-type]
    outbound = OutboundAudio("pcm24k", "audio/pcmu", 8000, 160, audio.outbound_resample_quality)
    expected = [s.dialect.build_media(f) for c in chunks[:7] for f in outbound.convert(c)]
    outbound.reset()
    expected.append('{"event":"clear","streamSid":"MZ1"}')
    expected += [s.dialect.build_media(f) for c in chunks[7:] for f in outbound.convert(c)]
    assert ws.sent == expected and len(expected) > 5
