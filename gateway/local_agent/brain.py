"""Reply engines of the local agent: what to say (and which tools to call) for each reply. Pure.

One small interface, :class:`ReplyEngine`: given what triggered a reply (:data:`Trigger`: a user turn, a
``reply.create``, or the answers to the tool calls of an earlier reply) and the session's context
(:class:`BrainContext`), it yields :data:`Step` values: :class:`Say` (a sentence or more to speak, in order),
:class:`CallTool` (emit ``tool.call``) and :class:`Decided` (which intent was chosen, for logs).
docs/architecture/local-agent.md#reply-engines.

Here, the default engine, :class:`IntentEngine`: deterministic. The caller's words go through the speech stack's
:class:`~gateway.local_agent.speech.IntentMatcher` (run in the worker pool the engine is handed) and the matching
intent of ``config/local_agent/intents.toml`` decides the reply. Everything after the match is plain functions
(:func:`plan_user_turn`, :func:`plan_tool_answers`, :func:`plan_reply_create`). A tool the session declares is
called with arguments read from the caller's words against its JSON Schema, and missing required ones are asked
for first, one turn at a time (:mod:`.arguments`; the pending request travels as a :class:`Remember` step the
session keeps in its :class:`~.conversation.Conversation`). ``reply.create`` instructions are rephrased or matched
against the intents (:mod:`.instructions`). The session's ``system_prompt`` is not used (only logged as present).
The optional LLM engine is :mod:`.llm` (it does HTTP), its pure stream decoding :mod:`.llm_stream`.

No sockets, no clock, no environment; the only I/O is :func:`load_intents` reading the file it is given, at
start-up. :class:`~.conversation.Conversation` is the session's history the engines read.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from gateway.errors import ConfigError

from . import arguments as args
from .conversation import Conversation
from .instructions import intent_probe, rephrase
from .protocol import ToolDef

if TYPE_CHECKING:
    from .speech.intents import Understanding

__all__ = [
    "BrainContext",
    "CallTool",
    "CreateRequest",
    "Decided",
    "Intent",
    "IntentEngine",
    "IntentTable",
    "IntentsError",
    "Remember",
    "ReplyEngine",
    "RunBlocking",
    "Say",
    "Step",
    "ToolOutcome",
    "ToolsAnswered",
    "Trigger",
    "UserTurn",
    "first_speech_chunks",
    "load_intents",
    "parse_intents",
    "plan_reply_create",
    "plan_slot_answer",
    "plan_tool_request",
    "plan_tool_answers",
    "plan_user_turn",
    "render_result",
]

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
    """Every call of one earlier reply has a result or timed out: then the answer reply runs
    (docs/reference/local-agent-api.md#implemented, Tools)."""

    outcomes: tuple[ToolOutcome, ...]


Trigger: TypeAlias = UserTurn | CreateRequest | ToolsAnswered


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    #: The text is fixed (the intent table's or the session's greeting, no variable parts), so its synthesis may
    #: be cached and reused (:class:`~.synth_cache.SynthCache`). Not part of equality: it says how, not what, to speak.
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


@dataclass(frozen=True, slots=True)
class Remember:
    """Keep this slot-filling state for the caller's next turn (``None``: forget it). The replier stores it in the
    session's conversation as the reply starts (docs/how-to/local-agent.md#tool-arguments)."""

    slots: args.SlotFill | None


Step: TypeAlias = Say | CallTool | Decided | Remember


@dataclass(frozen=True, slots=True)
class BrainContext:
    system_prompt: str | None
    tools: tuple[ToolDef, ...]
    conversation: Conversation
    #: The session's clock (aware), for "tomorrow" and "next Friday"; ``None``: relative days are not understood.
    now: datetime | None = None

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
# The intent table (config/local_agent/intents.toml)


class IntentsError(ConfigError, ValueError):
    """The intents file is invalid (config invalid); the message names the bad key."""


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    reply: str
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    reply_after_tool: str | None = None
    #: What the intent asks for, in the words a tool description would use: binds the intent to a declared tool
    #: under another name (docs/how-to/local-agent.md#tool-arguments).
    description: str | None = None


@dataclass(frozen=True, slots=True)
class IntentTable:
    threshold: float
    fallback_reply: str
    intents: tuple[Intent, ...]
    #: Spoken after a ``tool.result`` with ``is_error: true``.
    tool_error_reply: str = "Sorry, I couldn't complete that just now."
    #: Spoken when a tool call gets no result within its ``timeout_seconds``: the agent apologises
    #: (docs/reference/local-agent-api.md#implemented).
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
    """Validate the parsed TOML of an intents file (format: docs/how-to/local-agent.md#intents-file)."""
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
                description=_opt_str(raw, "description", where),
            )
        )
    table = IntentTable(
        threshold=float(threshold),
        fallback_reply=_req_str(data, "fallback_reply", "(top level)"),
        intents=tuple(intents),
    )
    overrides: dict[str, Any] = {
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
        # Live, the pre-amble reply around a tool.call is silent (docs/reference/local-agent-api.md#implemented, Tools).
        context = {"intent": intent.name, "after": intent.reply_after_tool}
        return [CallTool(intent.tool, dict(intent.arguments), context)]
    return [Say(intent.reply, fixed=True)]


def render_result(template: str | None, result: str) -> str:
    """Fill ``{result}`` with a speakable form of a ``tool.result`` string (itself usually JSON;
    docs/how-to/local-agent.md#intents-file)."""
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


#: A non-tool intent this much closer than the pending question's tool makes an unusable answer a change of subject.
SWITCH_SCORE = 0.5
#: How close (cosine) instructions (or the topic of a "tell the caller …") must be to an intent for the intent's reply
#: to answer them: higher than for a caller's words, as instructions are worded unlike the examples.
INSTRUCTION_INTENT_SCORE = 0.45


def plan_reply_create(
    table: IntentTable, instructions: str | None, matched: tuple[str | None, float] | None = None
) -> list[Step]:
    """``reply.create``: instructions are guidance for this one reply (docs/how-to/local-agent.md#reply-instructions):
    rephrased into words for the caller where they say what to tell them; else the reply of the intent they match
    (``matched``: the matcher's ``(intent, score)`` on them, or on the topic of a "tell the caller …"); else the
    default line."""
    if not instructions or not instructions.strip():
        return [Say(table.reply_create_default, fixed=True)]
    said = rephrase(instructions)
    intent = table.get(matched[0]) if matched is not None else None
    if matched is None or matched[1] < INSTRUCTION_INTENT_SCORE:
        intent = None
    if said is not None and (not said.topic or intent is None):
        return [Say(table.instructions_template.replace("{instructions}", said.text))]
    if intent is not None:
        return [Say(intent.reply, fixed=True)]
    return [Say(table.reply_create_default, fixed=True)]


def _plan_steps(plan: args.Plan, had_state: bool) -> list[Step]:
    if isinstance(plan, args.Ready):
        head: list[Step] = [Remember(None)] if had_state else []
        return [*head, CallTool(plan.tool, plan.arguments, plan.context)]
    if isinstance(plan, args.Ask):
        return [Remember(plan.state), Say(plan.text)]
    return [Remember(None), Say(plan.text)]


def plan_tool_request(
    table: IntentTable, tool: ToolDef, intent_name: str | None, text: str, now: datetime | None, *, had_state: bool
) -> list[Step]:
    """The caller asked for ``tool`` (directly or through ``intent_name``): call it with the arguments their
    words give, or ask for the first required one missing."""
    found = table.get(intent_name)
    intent = found if found is not None and found.tool is not None else None
    context = {"intent": intent.name if intent else None, "after": intent.reply_after_tool if intent else None}
    extraction = args.extract(tool.parameters, text, now)
    defaults: dict[str, Any] = {}
    if intent is not None:
        # The intents file's fixed arguments are for its own tool; another tool gets only those it declares.
        declared = tool.parameters.get("properties")
        own = intent.tool == tool.name
        defaults = {k: v for k, v in intent.arguments.items() if own or isinstance(declared, Mapping) and k in declared}
    plan = args.start(tool.name, tool.parameters, extraction, defaults=defaults, context=context)
    return _plan_steps(plan, had_state)


def plan_slot_answer(
    state: args.SlotFill, tool: ToolDef, text: str, now: datetime | None, *, switched_to: str | None = None
) -> list[Step] | None:
    """The caller's turn while ``state`` waits for an argument. ``None``: the turn matched ``switched_to``, another
    intent, and gave nothing for the question (or the question takes free text): a change of subject, so the request
    is forgotten and that intent answered."""
    extraction = args.extract(tool.parameters, text, now, asking=state.asking)
    if switched_to is not None:
        # A free-text answer takes any words, so there the intent decides; elsewhere the value does.
        kinds = {p.name: p.kind for p in args.params_of(tool.parameters)}
        if state.asking not in extraction.values or kinds.get(state.asking) in (args.Kind.TEXT, args.Kind.NAME):
            return None
    return _plan_steps(args.answer(state, tool.parameters, extraction), had_state=True)


class _Matcher(Protocol):
    def match(self, text: str) -> tuple[str | None, float]: ...

    def understand(
        self,
        text: str,
        tools: Mapping[str, Sequence[str]],
        descriptions: Mapping[str, str] | None = None,
        gist: str | None = None,
    ) -> Understanding: ...


class IntentEngine:
    """The default engine: intent nearest-neighbour over the caller's words, replies from the intent table, declared
    tools called with arguments from the caller's words."""

    name = "intents"
    #: The reply to a turn depends on its text, the declared tools and the pending slot-filling state only
    #: (the replier hands a prepared turn that state: docs/architecture/local-agent.md#working-ahead).
    deterministic = True

    def __init__(self, table: IntentTable, matcher: _Matcher, run_blocking: RunBlocking) -> None:
        self.table = table
        self._matcher = matcher
        self._run_blocking = run_blocking
        self._descriptions = {i.name: i.description for i in table.intents if i.description}
        self._intent_tools = {i.name: i.tool for i in table.intents}

    async def reply(self, trigger: Trigger, ctx: BrainContext) -> AsyncGenerator[Step, None]:
        if isinstance(trigger, UserTurn):
            steps = await self._user_turn(trigger.text, ctx)
        elif isinstance(trigger, CreateRequest):
            matched = None
            said = rephrase(trigger.instructions) if trigger.instructions else None
            if trigger.instructions and (said is None or said.topic):
                probe = said.text if said is not None else intent_probe(trigger.instructions)
                matched = await self._run_blocking(self._matcher.match, probe)
            steps = plan_reply_create(self.table, trigger.instructions, matched)
        else:
            steps = plan_tool_answers(self.table, trigger.outcomes)
        for step in steps:
            yield step

    async def _user_turn(self, text: str, ctx: BrainContext) -> list[Step]:
        tools = {t.name: t for t in ctx.tools}
        texts = {t.name: args.tool_text(t.name, t.description) for t in ctx.tools}
        gist = args.gist(text) if texts else None
        u = await self._run_blocking(self._matcher.understand, text, texts, self._descriptions, gist)
        steps: list[Step] = [Decided(u.intent, u.score)]
        bound = args.bind_intents(u.intent_tools, self._intent_tools, frozenset(tools))
        state = ctx.conversation.slots
        if state is not None and state.tool in tools:
            other = u.intent if u.score >= SWITCH_SCORE and bound.get(u.intent or "") != state.tool else None
            answered = plan_slot_answer(state, tools[state.tool], text, ctx.now, switched_to=other)
            if answered is not None:
                return steps + answered
        had_state = state is not None
        direct = {
            name: score + args.overlap_bonus(text, name, tools[name].description, tools[name].parameters)
            for name, score in u.direct.items()
        }
        extractions: dict[str, args.Extraction] = {}

        def gives(name: str) -> bool:
            params = tools[name].parameters
            extractions[name] = extractions.get(name) or args.extract(params, text, ctx.now)
            return args.gives_required(params, extractions[name])

        chosen = args.choose_tool(u.intent, u.score, bound, direct, u.intent_scores, gives)
        if chosen is not None:
            intent = u.intent if u.intent is not None and bound.get(u.intent) == chosen else None
            return steps + plan_tool_request(self.table, tools[chosen], intent, text, ctx.now, had_state=had_state)
        head: list[Step] = [Remember(None)] if had_state else []
        return steps + head + plan_user_turn(self.table, u.intent, frozenset())


# --------------------------------------------------------------------------------------------------------------
# Speech planning


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
