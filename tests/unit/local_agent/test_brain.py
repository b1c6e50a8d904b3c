"""Reply engines (gateway/local_agent/brain.py): the intent table and the intent engine's pure policy, the real
matcher on the committed intents, the conversation history (conversation.py), and the LLM engine's pure streaming
helpers (llm_stream.py: SSE, deltas, sentences)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.local_agent.brain import (
    BrainContext,
    CallTool,
    CreateRequest,
    Decided,
    IntentEngine,
    IntentsError,
    IntentTable,
    Remember,
    Say,
    Step,
    ToolOutcome,
    ToolsAnswered,
    UserTurn,
    first_speech_chunks,
    load_intents,
    parse_intents,
    plan_reply_create,
    plan_tool_answers,
    plan_user_turn,
    render_result,
)
from gateway.local_agent.conversation import Conversation
from gateway.local_agent.llm_stream import (
    ChatStreamAccumulator,
    SentenceStream,
    SseDecoder,
    build_llm_messages,
    build_llm_tools,
)
from gateway.local_agent.protocol import ToolDef
from gateway.local_agent.settings import DEFAULT_INTENTS_PATH
from gateway.local_agent.speech import IntentMatcher, SpeechModels, split_sentences

TABLE = load_intents(DEFAULT_INTENTS_PATH)
BOOK_AFTER = TABLE.get("book_table").reply_after_tool  # type: ignore[union-attr]
HUMAN_AFTER = TABLE.get("human_agent").reply_after_tool  # type: ignore[union-attr]


# ---- the intents file


def test_the_committed_intents_file_loads() -> None:
    assert TABLE.fallback_reply and 0 < TABLE.threshold < 1
    book = TABLE.get("book_table")
    assert book is not None and book.tool == "book_table"
    assert book.reply_after_tool is not None and "{result}" in book.reply_after_tool
    human = TABLE.get("human_agent")
    assert human is not None and dict(human.arguments) == {"destination": "front desk"}
    assert TABLE.get("nope") is None and TABLE.get(None) is None


GOOD = {"fallback_reply": "Sorry?", "intent": [{"name": "hi", "examples": ["hello"], "reply": "Hi."}]}


@pytest.mark.parametrize(
    "change,error",
    [
        ({"fallback_reply": None}, "fallback_reply"),
        ({"threshold": 2}, "threshold"),
        ({"intent": []}, "intent must be a non-empty array"),
        ({"intent": [{"name": "hi", "examples": [], "reply": "x"}]}, "intent[0] (hi).examples"),
        ({"intent": [{"name": "hi", "examples": ["a"]}]}, "intent[0] (hi).reply"),
        ({"intent": [{"examples": ["a"], "reply": "x"}]}, "intent[0].name"),
        ({"intent": [{"name": "a", "examples": ["a"], "reply": "x", "arguments": []}]}, "intent[0] (a).arguments"),
        ({"intent": [GOOD["intent"][0]] * 2}, "intent[1] (hi).name is a duplicate"),  # type: ignore[index]
        ({"tool_timeout_reply": ""}, "tool_timeout_reply"),
    ],
)
def test_invalid_intent_tables_name_the_bad_key(change: dict[str, Any], error: str) -> None:
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(IntentsError, match=re.escape(error)):
        parse_intents(data)


def test_optional_replies_can_be_overridden(tmp_path: Path) -> None:
    p = tmp_path / "intents.toml"
    p.write_text(
        'fallback_reply = "Pardon?"\ntool_timeout_reply = "Still waiting, sorry."\n'
        'instructions_template = "Note: {instructions}"\n'
        '[[intent]]\nname = "hi"\nexamples = ["hello"]\nreply = "Hi."\n'
    )
    table = load_intents(p)
    assert table.tool_timeout_reply == "Still waiting, sorry." and table.instructions_template == "Note: {instructions}"
    with pytest.raises(IntentsError, match="does not exist"):
        load_intents(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    with pytest.raises(IntentsError, match="not valid TOML"):
        load_intents(tmp_path / "bad.toml")


# ---- the intent engine's policy


@pytest.mark.parametrize(
    "intent,declared,expected",
    [
        ("opening_hours", frozenset(), [Say(TABLE.get("opening_hours").reply)]),  # type: ignore[union-attr]
        (None, frozenset(), [Say(TABLE.fallback_reply)]),
        ("not-in-table", frozenset(), [Say(TABLE.fallback_reply)]),
        ("book_table", frozenset(), [Say(TABLE.get("book_table").reply)]),  # type: ignore[union-attr]
        ("book_table", frozenset({"transfer_call"}), [Say(TABLE.get("book_table").reply)]),  # type: ignore[union-attr]
        (
            "book_table",
            frozenset({"book_table"}),
            [CallTool("book_table", {}, {"intent": "book_table", "after": BOOK_AFTER})],
        ),
        (
            "human_agent",
            frozenset({"transfer_call"}),
            [CallTool("transfer_call", {"destination": "front desk"}, {"intent": "human_agent", "after": HUMAN_AFTER})],
        ),
    ],
)  # fmt: skip
def test_user_turn_plan(intent: str | None, declared: frozenset[str], expected: list[Step]) -> None:
    assert plan_user_turn(TABLE, intent, declared) == expected


@pytest.mark.parametrize(
    "template,result,spoken",
    [
        ("Done: {result}.", '"a table at seven"', "Done: a table at seven."),
        ("Done: {result}.", '{"confirmation": "a table at seven"}', "Done: a table at seven."),
        ("Done: {result}.", '{"when": "seven", "size": 2, "ok": true}', "Done: seven, 2."),
        ("Done: {result}.", "not json at all", "Done: not json at all."),
        ("Done: {result}.", "[1, 2]", "Done: 1, 2."),
        ("Done: {result}.", "42", "Done: 42."),
        ("Held {result} {braces}", '"x"', "Held x {braces}"),
        (None, '"just the result"', "just the result"),
        ("No placeholder.", '"ignored"', "No placeholder."),
    ],
)
def test_render_result(template: str | None, result: str, spoken: str) -> None:
    assert render_result(template, result) == spoken


def outcome(**kw: Any) -> ToolOutcome:
    base: dict[str, Any] = {
        "call_id": "c",
        "name": "book_table",
        "context": {"after": "All done: {result}."},
        "result": '"ok"',
    }
    return ToolOutcome(**{**base, **kw})


@pytest.mark.parametrize(
    "outcomes,expected",
    [
        ([outcome()], [Say("All done: ok.")]),
        ([outcome(timed_out=True, result=None)], [Say(TABLE.tool_timeout_reply)]),
        ([outcome(is_error=True)], [Say(TABLE.tool_error_reply)]),
        ([outcome(context={})], [Say("ok")]),
        ([outcome(context={}, result='""')], []),
        ([outcome(timed_out=True), outcome(call_id="d", timed_out=True)], [Say(TABLE.tool_timeout_reply)]),
        ([outcome(), outcome(call_id="d", is_error=True)], [Say("All done: ok."), Say(TABLE.tool_error_reply)]),
    ],
)
def test_tool_answer_plan(outcomes: list[ToolOutcome], expected: list[Step]) -> None:
    assert plan_tool_answers(TABLE, outcomes) == expected


HOURS = TABLE.get("opening_hours").reply  # type: ignore[union-attr]
GREETING = TABLE.get("greeting").reply  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "instructions,matched,spoken",
    [
        ("  Please hold.  ", None, "Please hold."),
        (None, None, TABLE.reply_create_default),
        ("Tell the caller their table is ready.", None, "Your table is ready."),
        ("Let the user know that the kitchen closes at ten", None, "The kitchen closes at ten."),
        ("Ask the caller to hold", None, "Could you please hold?"),
        ("Ask the caller whether they would like a window seat", None, "Would you like a window seat?"),
        ("Ask the user for their phone number", None, "Could I have your phone number?"),
        ("Apologise for the wait", None, "Sorry for the wait."),
        ("Say: We close at ten tonight.", None, "We close at ten tonight."),
        ("The caller's order has shipped.", None, "Your order has shipped."),
        ("Welcome back.", None, "Welcome back."),
        # The gateway's own instructions: the status is said, the guidance sentence is not.
        (
            "The transfer did not go through. Tell the caller, and offer to help in another way.",
            None,
            "The transfer did not go through.",
        ),
        (
            "The caller pressed these keys on their phone keypad: 1 2. Treat them as the caller's answer and respond "
            "accordingly.",
            None,
            "You pressed these keys on your phone keypad: 1 2.",
        ),
        # A topic, not words: the intent that answers it speaks.
        ("Tell the caller our opening hours", ("opening_hours", 0.8), HOURS),
        ("Tell the caller our opening hours", ("opening_hours", 0.3), "Our opening hours."),
        # Guidance: an intent it matches, else the default line; never read out.
        ("Greet the caller warmly", ("greeting", 0.5), GREETING),
        ("Be brief and friendly", ("greeting", 0.38), TABLE.reply_create_default),
    ],
)
def test_reply_create_instructions_guide_the_reply(
    instructions: str | None, matched: tuple[str, float] | None, spoken: str
) -> None:
    assert plan_reply_create(TABLE, instructions, matched) == [Say(spoken)]


def test_the_instructions_template_wraps_what_is_said() -> None:
    custom = IntentTable(0.3, "?", TABLE.intents, instructions_template="Update: {instructions}")
    assert plan_reply_create(custom, "Tell the caller it's nearly there") == [Say("Update: It's nearly there.")]


# ---- the intent engine with the real matcher


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


def run_engine(engine: IntentEngine, trigger: Any, tools: tuple[ToolDef, ...] = ()) -> list[Step]:
    async def go() -> list[Step]:
        ctx = BrainContext(None, tools, Conversation())
        return [s async for s in engine.reply(trigger, ctx)]

    return asyncio.run(go())


@pytest.fixture(scope="module")
def engine(speech_models: SpeechModels) -> IntentEngine:
    matcher = IntentMatcher(speech_models.embedder, TABLE.examples, threshold=TABLE.threshold)
    return IntentEngine(TABLE, matcher, _inline)  # the engine's pool runner, inline here (no event loop threads needed)


@pytest.mark.speech
@pytest.mark.parametrize(
    "text,intent",
    [
        ("What time do you close tonight?", "opening_hours"),
        ("What is the address of your restaurant?", "location"),
        ("Do you have anything for vegans?", "dietary"),
        ("Can I bring my car?", "parking"),
        ("Let me talk to a real person please.", "human_agent"),
        ("The weather on Mars is cold.", None),
    ],
)
def test_intent_engine_routes_caller_words_to_intents(engine: IntentEngine, text: str, intent: str | None) -> None:
    steps = run_engine(engine, UserTurn(text))
    decided = steps[0]
    assert isinstance(decided, Decided) and decided.intent == intent, decided
    found = TABLE.get(intent)
    assert steps[1:] == [Say(found.reply if found else TABLE.fallback_reply)]


@pytest.mark.speech
def test_intent_engine_calls_a_declared_tool_and_answers_its_result(engine: IntentEngine) -> None:
    tools = (ToolDef("book_table"),)
    steps = run_engine(engine, UserTurn("I would like to reserve a table for four"), tools)
    call = steps[1]
    assert isinstance(call, CallTool) and call.name == "book_table"
    answer = run_engine(engine, ToolsAnswered((ToolOutcome("c", "book_table", call.context, '"table for four"'),)))
    assert answer == [Say("All done: table for four. We look forward to seeing you.")]
    assert run_engine(engine, CreateRequest("One moment please.")) == [Say("One moment please.")]


#: Saturday 5 December 2026, 16:19 UTC: the session clock the engine tests run at.
NOW = datetime(2026, 12, 5, 16, 19, tzinfo=UTC)
RESERVE = ToolDef(
    "reserve_table",
    "Reserve a table at the restaurant.",
    {
        "type": "object",
        "properties": {"party_size": {"type": "integer"}, "time": {"type": "string"}},
        "required": ["party_size", "time"],
    },
)


def converse(engine: IntentEngine, texts: list[str], tools: tuple[ToolDef, ...]) -> list[list[Step]]:
    """Turns of one session: each reply's steps, its Remember step applied as the replier does."""
    conversation = Conversation()

    async def go() -> list[list[Step]]:
        replies = []
        for text in texts:
            ctx = BrainContext(None, tools, conversation, NOW)
            steps = [s async for s in engine.reply(UserTurn(text), ctx)]
            for s in steps:
                if isinstance(s, Remember):
                    conversation.slots = s.slots
            replies.append([s for s in steps if not isinstance(s, (Decided, Remember))])
        return replies

    return asyncio.run(go())


@pytest.mark.speech
def test_a_tool_declared_under_its_own_name_gets_typed_arguments(engine: IntentEngine) -> None:
    (steps,) = converse(engine, ["A table for four at seven thirty tomorrow."], (RESERVE,))
    assert steps == [CallTool("reserve_table", {"party_size": 4, "time": "2026-12-06T19:30"}, ANY_CONTEXT)]
    call = steps[0]
    assert isinstance(call, CallTool) and type(call.arguments["party_size"]) is int


class _AnyContext(dict[str, Any]):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict)

    __hash__ = None  # type: ignore[assignment]


ANY_CONTEXT = _AnyContext()


@pytest.mark.speech
def test_a_missing_required_argument_is_asked_for_and_the_answer_fills_it(engine: IntentEngine) -> None:
    replies = converse(
        engine, ["I'd like to book a table.", "Four, please.", "Um, not sure.", "Tomorrow at 8 pm."], (RESERVE,)
    )
    assert replies[0] == [Say("For how many people?")]
    assert replies[1] == [Say("For what day and time?")]
    assert replies[2] == [Say("Sorry, I didn't get the time. For what day and time?")]
    assert replies[3] == [CallTool("reserve_table", {"party_size": 4, "time": "2026-12-06T20:00"}, ANY_CONTEXT)]


@pytest.mark.speech
def test_a_change_of_subject_drops_the_pending_request(engine: IntentEngine) -> None:
    replies = converse(engine, ["Book a table please.", "What time do you open?", "Four."], (RESERVE,))
    assert replies[0] == [Say("For how many people?")]
    assert replies[1] == [Say(HOURS, fixed=True)]
    assert replies[2] != [Say("For what day and time?")]  # the request was forgotten: "four" alone books nothing


@pytest.mark.speech
@pytest.mark.parametrize(
    "text,tool,arguments",
    [
        ("What's the weather like in Paris?", "get_weather", {"city": "Paris"}),
        ("Can I speak to a real person?", "connect_to_staff", {}),
        ("Goodbye, thanks.", "hang_up", {}),
        ("Where is my order? It's order one two three four five.", "lookup_order", {"order_number": "12345"}),
    ],
)
def test_declared_tools_are_matched_by_their_descriptions(
    engine: IntentEngine, text: str, tool: str, arguments: dict[str, Any]
) -> None:
    tools = (
        RESERVE,
        ToolDef("get_weather", "Get the current weather for a city.", {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ToolDef("connect_to_staff", "Connect the caller to a member of staff.", {"type": "object", "properties": {}}),
        ToolDef("hang_up", "End the call."),
        ToolDef("lookup_order", "Look up the status of a customer's order by its number.", {"type": "object",
                "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]}),
    )  # fmt: skip
    (steps,) = converse(engine, [text], tools)
    assert steps == [CallTool(tool, arguments, ANY_CONTEXT)]


@pytest.mark.speech
def test_a_request_giving_a_tools_arguments_calls_it_though_an_intent_matched_first(engine: IntentEngine) -> None:
    # "Can we come tomorrow at one" alone is closest to opening_hours; the party size and the time say booking.
    appointment = ToolDef(
        "book_appointment",
        "Book an appointment with the doctor.",
        {
            "type": "object",
            "properties": {"date": {"type": "string", "format": "date"}, "time": {"type": "string", "format": "time"}},
            "required": ["date", "time"],
        },
    )
    tools = (RESERVE, appointment)
    (steps,) = converse(engine, ["We are a party of twelve. Can we come tomorrow at one?"], tools)
    assert steps == [CallTool("reserve_table", {"party_size": 12, "time": "2026-12-06T13:00"}, ANY_CONTEXT)]
    (steps,) = converse(engine, ["Are you open tomorrow at one?"], tools)  # arguments for a tool, asked of an intent
    assert steps == [Say(HOURS, fixed=True)]


@pytest.mark.speech
@pytest.mark.parametrize(
    "instructions,spoken",
    [
        ("Tell the caller our opening hours.", HOURS),
        ("Greet the caller.", GREETING),
        ("Be concise.", TABLE.reply_create_default),
        ("Tell the caller their table is booked for eight.", "Your table is booked for eight."),
    ],
)
def test_the_engine_maps_reply_create_instructions_to_a_reply(
    engine: IntentEngine, instructions: str, spoken: str
) -> None:
    assert [s for s in run_engine(engine, CreateRequest(instructions)) if isinstance(s, Say)] == [Say(spoken)]


# ---- LLM streaming helpers


def test_sse_decoder_handles_split_chunks_crlf_comments_and_multiline_data() -> None:
    stream = b': keep-alive\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n'
    whole = SseDecoder().feed(stream)
    assert whole == ['{"a":\n1}', "[DONE]"]
    d = SseDecoder()
    pieces: list[str] = []
    for i in range(len(stream)):
        pieces += d.feed(stream[i : i + 1])
    assert pieces == whole
    d2 = SseDecoder()
    assert d2.feed(b"data: tail") == [] and d2.flush() == ["tail"]


def chunk(
    content: str | None = None, tool_calls: list[dict[str, Any]] | None = None, finish: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_chat_stream_accumulator_yields_text_and_assembles_tool_calls() -> None:
    acc = ChatStreamAccumulator()
    texts = [
        acc.feed(chunk("Let me ")),
        acc.feed(chunk("check.")),
        acc.feed(chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                    "function": {"name": "book_", "arguments": ""}}])),
        acc.feed(chunk(tool_calls=[{"index": 0, "function": {"name": "table", "arguments": '{"party'}}])),
        acc.feed(chunk(tool_calls=[{"index": 0, "function": {"arguments": '_size": 4}'}}])),
        acc.feed(chunk(tool_calls=[{"index": 1, "id": "call_2",
                                    "function": {"name": "end_call", "arguments": "{bad"}}])),
        acc.feed(chunk(finish="tool_calls")),
        acc.feed({"choices": [{"index": 1, "delta": {"content": "other choice"}}]}),
    ]  # fmt: skip
    assert "".join(texts) == "Let me check."
    assert acc.tool_calls() == [("book_table", {"party_size": 4}), ("end_call", {})]
    assert acc.finish_reason == "tool_calls"


def test_sentence_stream_hands_on_whole_sentences_as_soon_as_they_end() -> None:
    s = SentenceStream(split_sentences)
    out = []
    for piece in ["Sure", ". We open", " at 9.30 tomorrow", "! Anything", " else?"]:
        out.append(s.push(piece))
    assert out == [[], ["Sure."], [], ["We open at 9.30 tomorrow!"], []]
    assert s.flush() == ["Anything else?"]
    assert s.flush() == []


@pytest.mark.parametrize(
    "sentence,chunks",
    [
        ("Yes, we have a free car park.", ["Yes, we have a free car park."]),
        (
            "We are at twelve Harbour Road, right next to the old lighthouse, five minutes' walk from the station.",
            [
                "We are at twelve Harbour Road,",
                "right next to the old lighthouse, five minutes' walk from the station.",
            ],
        ),
        (
            "Starters are around eight pounds, main courses between fourteen and twenty two pounds.",
            ["Starters are around eight pounds,", "main courses between fourteen and twenty two pounds."],
        ),
        (NO_LATE_COMMA := "Well, this is a long sentence without another comma in it at all.", [NO_LATE_COMMA]),
        (COMMA_AT_END := "One two three four five six seven eight nine ten eleven, end.", [COMMA_AT_END]),
    ],
)
def test_a_long_first_sentence_is_cut_at_a_comma_for_a_quick_first_audio(sentence: str, chunks: list[str]) -> None:
    assert first_speech_chunks(sentence) == chunks
    assert " ".join(chunks) == sentence


def test_conversation_is_bounded_and_never_starts_with_orphan_tool_results() -> None:
    c = Conversation(max_messages=3)
    c.add_user("book a table")
    c.add_assistant("", [("call_1", "book_table", {"n": 2})])
    c.add_tool_result("call_1", '"ok"')
    assert c.messages[1]["tool_calls"][0]["function"] == {"name": "book_table", "arguments": '{"n": 2}'}
    c.add_assistant("Booked.")
    # Dropping the user message leaves the assistant tool call first; dropping one more would orphan the result.
    assert [m["role"] for m in c.messages] == ["assistant", "tool", "assistant"]
    c.add_user("thanks")
    assert [m["role"] for m in c.messages] == ["assistant", "user"]
    c.add_assistant("")  # nothing said, no tools: nothing recorded
    assert len(c.messages) == 2 and c.last_assistant_text == "Booked."


def test_llm_request_parts() -> None:
    conv = Conversation()
    conv.add_user("hi")
    tools = (ToolDef("end_call", "Hang up"), ToolDef("x", parameters={"type": "object"}))
    ctx = BrainContext("You are a host.", tools, conv)
    assert build_llm_messages(ctx, UserTurn("hi")) == [
        {"role": "system", "content": "You are a host."},
        {"role": "user", "content": "hi"},
    ]
    assert build_llm_messages(ctx, CreateRequest("Say goodbye."))[-1] == {"role": "system", "content": "Say goodbye."}
    assert build_llm_tools(ctx.tools) == [
        {"type": "function", "function": {"name": "end_call", "description": "Hang up",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "x", "description": "", "parameters": {"type": "object"}}},
    ]  # fmt: skip
    json.dumps(build_llm_messages(ctx, UserTurn("hi")))


def test_a_forked_conversation_keeps_the_pending_request_but_no_history() -> None:
    from gateway.local_agent.arguments import SlotFill

    c = Conversation()
    c.add_user("book a table")
    c.slots = SlotFill("reserve_table", {"party_size": 4}, "time")
    f = c.fork()
    assert f.messages == [] and f.slots is c.slots


@pytest.mark.speech
@pytest.mark.parametrize(
    "text",
    [
        "I am calling from the office on behalf of a colleague of mine,",
        "Hi, my name is Alex.",
        "who asked me to find out a couple of things for her before the weekend.",
    ],
)
def test_words_merely_near_a_tool_do_not_call_it(engine: IntentEngine, text: str) -> None:
    # The gateway's own end_call as it declares it: "calling" is close to "phone call", and hanging up on a caller
    # by mistake is the worst outcome, so a plain intent that matched better keeps the tool uncalled.
    end_call = ToolDef(
        "end_call",
        "Hang up the phone call. Use it once the caller says goodbye or asks to end the call, after you have said "
        "goodbye.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    )
    (steps,) = converse(engine, [text], (end_call, ToolDef("book_table", "Book a table.")))
    assert not any(isinstance(s, CallTool) for s in steps), steps
