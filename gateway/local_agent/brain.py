"""Reply engines of the local agent: what to say (and which tools to call) for each reply. Mostly pure.

One small interface, :class:`ReplyEngine`: given what triggered a reply (:data:`Trigger`: a user turn, a
``reply.create``, or the answers to the tool calls of an earlier reply) and the session's context
(:class:`BrainContext`), it yields :data:`Step` values: :class:`Say` (a sentence or more to speak, in order),
:class:`CallTool` (emit ``tool.call``, spec §3.2) and :class:`Decided` (which intent was chosen, for logs).

Two engines:

- :class:`IntentEngine` (default): deterministic. The caller's words go through the speech stack's
  :class:`~gateway.local_agent.speech.IntentMatcher` (run in the worker pool) and the matching intent of
  ``config/local_agent/intents.toml`` decides the reply. Everything after the match is pure
  (:func:`plan_user_turn`, :func:`plan_tool_answers`, :func:`plan_reply_create`). The session's
  ``system_prompt`` is not used (only logged as present).
- :class:`LlmEngine` (optional): an OpenAI-compatible ``/chat/completions`` endpoint, streamed (SSE), with tool
  calling; uses the session's ``system_prompt`` and tools, and hands text on sentence by sentence
  (:class:`SentenceStream`) so speech starts before the completion ends. The SSE decoding
  (:class:`SseDecoder`) and delta accumulation (:class:`ChatStreamAccumulator`) are pure.

:class:`Conversation` is the session's message history in the OpenAI chat shape (pure, bounded); the session
records what was actually said and the engines read it.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

import structlog

from .protocol import ToolDef

if TYPE_CHECKING:
    import aiohttp

    from .settings import LlmSettings

__all__ = [
    "BrainContext",
    "CallTool",
    "ChatStreamAccumulator",
    "Conversation",
    "CreateRequest",
    "Decided",
    "Intent",
    "IntentEngine",
    "IntentTable",
    "IntentsError",
    "LlmEngine",
    "ReplyEngine",
    "Say",
    "SentenceStream",
    "SseDecoder",
    "Step",
    "ToolOutcome",
    "ToolsAnswered",
    "Trigger",
    "UserTurn",
    "build_llm_messages",
    "build_llm_tools",
    "first_speech_chunks",
    "load_intents",
    "parse_intents",
    "plan_reply_create",
    "plan_tool_answers",
    "plan_user_turn",
    "render_result",
]

log = structlog.get_logger("local_agent")
T = TypeVar("T")

# --------------------------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True, slots=True)
class UserTurn:
    text: str


@dataclass(frozen=True, slots=True)
class CreateRequest:
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    call_id: str
    name: str
    #: What the engine attached to its :class:`CallTool` (e.g. the intent's ``reply_after_tool``).
    context: Mapping[str, Any]
    result: str | None
    is_error: bool = False
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class ToolsAnswered:
    """Every call of one earlier reply has a result or timed out (§3.2 step 5: then the answer reply runs)."""

    outcomes: tuple[ToolOutcome, ...]


Trigger: TypeAlias = UserTurn | CreateRequest | ToolsAnswered


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    #: The text is fixed (the intent table's or the session's greeting, no variable parts), so its synthesis may
    #: be cached and reused (session.SynthCache). Not part of equality: it says how, not what, to speak.
    fixed: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class CallTool:
    name: str
    arguments: Mapping[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decided:
    """Informational: what the engine understood (logged as ``local_agent.turn``)."""

    intent: str | None
    score: float | None = None


Step: TypeAlias = Say | CallTool | Decided


@dataclass(frozen=True, slots=True)
class BrainContext:
    system_prompt: str | None
    tools: tuple[ToolDef, ...]
    conversation: Conversation

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools)


class ReplyEngine(Protocol):
    """Decides one reply. Implementations must not block the event loop (blocking work goes to the pool).

    ``deterministic``: the reply to a user turn depends only on its text and the declared tools (no history, no
    side effects), so the session may work it out ahead while the caller pauses.
    """

    name: str
    deterministic: bool

    def reply(self, trigger: Trigger, ctx: BrainContext) -> AsyncGenerator[Step, None]: ...


RunBlocking: TypeAlias = Callable[..., Awaitable[Any]]


# --------------------------------------------------------------------------------------------------------------
# Conversation history (pure)


class Conversation:
    """Message history in the OpenAI chat shape, bounded to ``max_messages`` (oldest dropped first)."""

    __slots__ = ("messages", "_max")

    def __init__(self, max_messages: int = 60) -> None:
        self.messages: list[dict[str, Any]] = []
        self._max = max_messages

    def add_user(self, text: str) -> None:
        self._add({"role": "user", "content": text})

    def add_assistant(self, text: str, tool_calls: Sequence[tuple[str, str, Mapping[str, Any]]] = ()) -> None:
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            msg["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for cid, name, args in tool_calls
            ]
        if msg["content"] is None and not tool_calls:
            return
        self._add(msg)

    def add_tool_result(self, call_id: str, content: str) -> None:
        self._add({"role": "tool", "tool_call_id": call_id, "content": content})

    def _add(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        if len(self.messages) > self._max:
            del self.messages[: len(self.messages) - self._max]
            # Never start with tool results whose assistant tool_calls were dropped (the API rejects that).
            while self.messages and self.messages[0]["role"] == "tool":
                del self.messages[0]

    @property
    def last_assistant_text(self) -> str | None:
        for msg in reversed(self.messages):
            if msg["role"] == "assistant" and msg.get("content"):
                return str(msg["content"])
        return None


# --------------------------------------------------------------------------------------------------------------
# The intent table (config/local_agent/intents.toml)


class IntentsError(ValueError):
    """The intents file is invalid (config invalid); the message names the bad key."""


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    reply: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    reply_after_tool: str | None = None


@dataclass(frozen=True, slots=True)
class IntentTable:
    threshold: float
    fallback_reply: str
    intents: tuple[Intent, ...]
    #: Spoken after a ``tool.result`` with ``is_error: true``.
    tool_error_reply: str = "Sorry, I couldn't complete that just now."
    #: Spoken when a tool call gets no result within its ``timeout_seconds`` (§3.1: the agent apologises).
    tool_timeout_reply: str = "Sorry, that is taking too long. Let's try something else."
    #: ``reply.create`` with instructions speaks this, ``{instructions}`` replaced by them.
    instructions_template: str = "{instructions}"
    #: ``reply.create`` without instructions.
    reply_create_default: str = "Is there anything else I can help you with?"

    def get(self, name: str | None) -> Intent | None:
        for intent in self.intents:
            if intent.name == name:
                return intent
        return None

    @property
    def examples(self) -> dict[str, list[str]]:
        return {i.name: list(i.examples) for i in self.intents}


def _req_str(d: Mapping[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise IntentsError(f"{where}.{key} must be a non-empty string")
    return v.strip()


def _opt_str(d: Mapping[str, Any], key: str, where: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise IntentsError(f"{where}.{key} must be a non-empty string")
    return v.strip()


def parse_intents(data: Mapping[str, Any]) -> IntentTable:
    """Validate the parsed TOML of an intents file (format in README "Local agent")."""
    threshold = data.get("threshold", 0.35)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not -1.0 <= threshold <= 1.0:
        raise IntentsError("threshold must be a number within -1..1")
    raw_intents = data.get("intent")
    if not isinstance(raw_intents, list) or not raw_intents:
        raise IntentsError("intent must be a non-empty array of tables ([[intent]])")
    intents: list[Intent] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_intents):
        where = f"intent[{i}]"
        if not isinstance(raw, dict):
            raise IntentsError(f"{where} must be a table")
        name = _req_str(raw, "name", where)
        where = f"intent[{i}] ({name})"
        if name in seen:
            raise IntentsError(f"{where}.name is a duplicate")
        seen.add(name)
        examples = raw.get("examples")
        valid = isinstance(examples, list) and all(isinstance(e, str) and e.strip() for e in examples)
        if not valid or not examples:
            raise IntentsError(f"{where}.examples must be a non-empty list of strings")
        arguments = raw.get("arguments", {})
        if not isinstance(arguments, dict):
            raise IntentsError(f"{where}.arguments must be a table")
        tool = _opt_str(raw, "tool", where)
        after = _opt_str(raw, "reply_after_tool", where)
        intents.append(
            Intent(
                name=name,
                examples=tuple(e.strip() for e in examples),
                reply=_req_str(raw, "reply", where),
                tool=tool,
                arguments=arguments,
                reply_after_tool=after,
            )
        )
    table = IntentTable(
        threshold=float(threshold),
        fallback_reply=_req_str(data, "fallback_reply", "(top level)"),
        intents=tuple(intents),
    )
    overrides = {
        key: _req_str(data, key, "(top level)")
        for key in ("tool_error_reply", "tool_timeout_reply", "instructions_template", "reply_create_default")
        if key in data
    }
    if overrides:
        table = replace(table, **overrides)
    return table


def load_intents(path: Path) -> IntentTable:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise IntentsError(f"intents file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise IntentsError(f"intents file {path} is not valid TOML: {e}") from None
    try:
        return parse_intents(data)
    except IntentsError as e:
        raise IntentsError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# Intent engine: the pure policy


def plan_user_turn(table: IntentTable, intent_name: str | None, declared_tools: frozenset[str]) -> list[Step]:
    """What to do once the caller's words matched ``intent_name`` (``None``: nothing matched)."""
    intent = table.get(intent_name)
    if intent is None:
        return [Say(table.fallback_reply, fixed=True)]
    # A tool intent calls its tool only if the session declared one of that name; else it just speaks `reply`.
    if intent.tool and intent.tool in declared_tools:
        # Live (§3.2 step 3): the pre-amble reply around a tool.call is silent.
        context = {"intent": intent.name, "after": intent.reply_after_tool}
        return [CallTool(intent.tool, dict(intent.arguments), context)]
    return [Say(intent.reply, fixed=True)]


def render_result(template: str | None, result: str) -> str:
    """Fill ``{result}`` with a speakable form of a ``tool.result`` string (itself usually JSON, §2.1)."""
    try:
        value = json.loads(result)
    except ValueError:
        value = result
    if isinstance(value, dict):
        parts = [str(v) for v in value.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
        text = ", ".join(parts) if parts else result
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif value is None:
        text = ""
    else:
        text = str(value)
    if template is None:
        return text
    return template.replace("{result}", text)


def plan_tool_answers(table: IntentTable, outcomes: Sequence[ToolOutcome]) -> list[Step]:
    """The answer reply once every call of a reply is resolved (one :class:`Say` per outcome, in order)."""
    steps: list[Step] = []
    for o in outcomes:
        if o.timed_out:
            steps.append(Say(table.tool_timeout_reply, fixed=True))
        elif o.is_error:
            steps.append(Say(table.tool_error_reply, fixed=True))
        else:
            after = o.context.get("after")
            text = render_result(after if isinstance(after, str) else None, o.result or "")
            if text.strip():
                steps.append(Say(text))
    # Several identical apologies in a row would sound broken.
    deduped: list[Step] = []
    for s in steps:
        if not deduped or deduped[-1] != s:
            deduped.append(s)
    return deduped


def plan_reply_create(table: IntentTable, instructions: str | None) -> list[Step]:
    if instructions and instructions.strip():
        return [Say(table.instructions_template.replace("{instructions}", instructions.strip()))]
    return [Say(table.reply_create_default, fixed=True)]


class _Matcher(Protocol):
    def match(self, text: str) -> tuple[str | None, float]: ...


class IntentEngine:
    """The default engine: intent nearest-neighbour over the caller's words, replies from the intent table."""

    name = "intents"
    deterministic = True

    def __init__(self, table: IntentTable, matcher: _Matcher, run_blocking: RunBlocking) -> None:
        self.table = table
        self._matcher = matcher
        self._run_blocking = run_blocking

    async def reply(self, trigger: Trigger, ctx: BrainContext) -> AsyncGenerator[Step, None]:
        if isinstance(trigger, UserTurn):
            name, score = await self._run_blocking(self._matcher.match, trigger.text)
            yield Decided(name, score)
            steps = plan_user_turn(self.table, name, ctx.tool_names)
        elif isinstance(trigger, CreateRequest):
            steps = plan_reply_create(self.table, trigger.instructions)
        else:
            steps = plan_tool_answers(self.table, trigger.outcomes)
        for step in steps:
            yield step


# --------------------------------------------------------------------------------------------------------------
# LLM engine: streaming helpers (pure)


class SseDecoder:
    """Server-sent events (text/event-stream) bytes → the ``data`` payload of each complete event. Pure."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        out: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = self._buf[:nl].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buf = self._buf[nl + 1 :]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return out

    def flush(self) -> list[str]:
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        return out


@dataclass(slots=True)
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: str = ""


class ChatStreamAccumulator:
    """Chat-completion stream chunks → text deltas, plus the tool calls assembled at the end. Pure."""

    __slots__ = ("_calls", "finish_reason")

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Apply one parsed chunk; return its new text (may be empty)."""
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for tc in delta.get("tool_calls") or ():
                idx = tc.get("index", 0)
                call = self._calls.setdefault(idx, _PartialCall())
                if tc.get("id"):
                    call.id = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call.name += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call.arguments += fn["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, arguments)`` per call, in index order; unparsable arguments become ``{}``."""
        out: list[tuple[str, dict[str, Any]]] = []
        for idx in sorted(self._calls):
            call = self._calls[idx]
            if not call.name:
                continue
            try:
                args = json.loads(call.arguments) if call.arguments.strip() else {}
            except ValueError:
                args = {}
            out.append((call.name, args if isinstance(args, dict) else {"value": args}))
        return out


class SentenceStream:
    """Streamed text → whole sentences as soon as they are complete. Pure.

    A sentence is complete once sentence-final punctuation is followed by whitespace (the speech stack's
    :func:`split_sentences` rule), so "3.5" or "e.g." mid-stream do not cut early.
    """

    __slots__ = ("_buf", "_split")

    def __init__(self, split: Callable[[str], list[str]]) -> None:
        self._buf = ""
        self._split = split

    def push(self, text: str) -> list[str]:
        self._buf += text
        pieces = self._split(self._buf)
        if len(pieces) <= 1:
            return []
        done, last = pieces[:-1], pieces[-1]
        # Keep the unfinished tail (and whatever whitespace follows it) for the next push.
        self._buf = self._buf[self._buf.rfind(last) :]
        return done

    def flush(self) -> list[str]:
        pieces = self._split(self._buf)
        self._buf = ""
        return pieces


def first_speech_chunks(sentence: str, *, min_words: int = 4, max_words: int = 9) -> list[str]:
    """Split a long first sentence at its first comma (after ``min_words`` words) so the reply's first audio is
    synthesized from a short clause: Piper's time grows with the text, and only the first chunk delays the
    caller. Later sentences are synthesized while earlier audio plays, so they stay whole. Pure."""
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence]
    for i in range(min_words - 1, len(words) - 2):
        if words[i].endswith(","):
            return [" ".join(words[: i + 1]), " ".join(words[i + 1 :])]
    return [sentence]


def build_llm_messages(ctx: BrainContext, trigger: Trigger) -> list[dict[str, Any]]:
    """The request's messages: system prompt, history, and a one-reply instruction for ``reply.create``."""
    messages: list[dict[str, Any]] = []
    if ctx.system_prompt:
        messages.append({"role": "system", "content": ctx.system_prompt})
    messages.extend(ctx.conversation.messages)
    if isinstance(trigger, CreateRequest):
        # §2.1 reply.create: instructions apply to this reply only.
        messages.append(
            {"role": "system", "content": trigger.instructions or "Continue the conversation with a short reply."}
        )
    return messages


def build_llm_tools(tools: Sequence[ToolDef]) -> list[dict[str, Any]]:
    """Session tools (flat, §3.1) → the OpenAI nested ``function`` shape."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters) or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


class LlmEngine:
    """Replies from an OpenAI-compatible chat-completions endpoint, streamed sentence by sentence."""

    name = "llm"
    deterministic = False  # a request costs money and the reply depends on history: never speculate

    def __init__(
        self,
        settings: LlmSettings,
        http: aiohttp.ClientSession,
        *,
        split: Callable[[str], list[str]],
        fallback_reply: str = "Sorry, I'm having trouble answering right now.",
        api_key: str | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._split = split
        self._fallback = fallback_reply
        self._api_key = api_key if api_key is not None else (
            os.environ.get(settings.api_key_env) if settings.api_key_env else None
        )

    async def reply(self, trigger: Trigger, ctx: BrainContext) -> AsyncGenerator[Step, None]:
        import aiohttp

        s = self._settings
        body: dict[str, Any] = {"model": s.model, "messages": build_llm_messages(ctx, trigger), "stream": True}
        if ctx.tools:
            body["tools"] = build_llm_tools(ctx.tools)
            body["tool_choice"] = "auto"
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = s.base_url.rstrip("/") + "/chat/completions"
        acc = ChatStreamAccumulator()
        sentences = SentenceStream(self._split)
        said = False
        # Connect and per-read timeouts rather than one overall deadline: this generator is suspended while the
        # session speaks the sentences already yielded, which must not count against the endpoint.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.timeout_s, sock_read=s.timeout_s)
        try:
            async with self._http.post(url, json=body, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise _LlmFailed(f"HTTP {resp.status}")
                decoder = SseDecoder()
                done = False
                async for chunk in resp.content.iter_any():
                    for payload in decoder.feed(chunk):
                        if payload.strip() == "[DONE]":
                            done = True
                            break
                        for sentence in sentences.push(acc.feed(_parse_chunk(payload))):
                            said = True
                            yield Say(sentence)
                    if done:
                        break
        except (aiohttp.ClientError, TimeoutError, _LlmFailed) as e:
            # Upstream unavailable: logged once per reply; the caller hears an apology instead of silence (the
            # live service sent silent completed replies here, §2.2 `reply.error` row, which strands a phone caller).
            log.warning("local_agent.llm_failed", error=str(e) or type(e).__name__, url=url)
            if not said:
                yield Say(self._fallback)
            return
        for sentence in sentences.flush():
            yield Say(sentence)
        for name, args in acc.tool_calls():
            yield CallTool(name, args)


class _LlmFailed(Exception):
    pass


def _parse_chunk(payload: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except ValueError:
        raise _LlmFailed("malformed stream chunk") from None
    if not isinstance(obj, dict):
        raise _LlmFailed("malformed stream chunk")
    if "error" in obj:
        raise _LlmFailed(f"stream error: {obj['error']}")
    return obj
