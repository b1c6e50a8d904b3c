"""Tool arguments from a caller's words (gateway/local_agent/arguments/): spoken numbers, times and dates against an
injected clock, phone numbers, extraction against declared schemas, validation, follow-up questions, slot filling
and the choice of a declared tool. Pure and synchronous."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.local_agent.arguments import (
    Ask,
    GiveUp,
    Kind,
    Ready,
    SlotFill,
    answer,
    bind_intents,
    choose_tool,
    extract,
    gist,
    gives_required,
    params_of,
    question_for,
    speech_hint,
    start,
    tool_text,
    validate,
)
from gateway.local_agent.arguments.phone import phone_number
from gateway.local_agent.arguments.when import find_moment
from gateway.local_agent.arguments.words import numbers_in, tokenize

#: Saturday 5 December 2026, 16:19 UTC: the session clock every test here runs at.
NOW = datetime(2026, 12, 5, 16, 19, tzinfo=UTC)
RESERVE = {
    "type": "object",
    "properties": {"party_size": {"type": "integer", "minimum": 1, "maximum": 20}, "time": {"type": "string"}},
    "required": ["party_size", "time"],
}


@pytest.mark.parametrize(
    "text,values",
    [
        ("four", [4]),
        ("twenty two people", [22]),
        ("a hundred and five", [105]),
        ("one hundred", [100]),
        ("a couple of us", [2]),
        ("12 guests", [12]),
        ("the twenty first", [21]),
        ("twenty-two", [22]),
        ("no numbers here", []),
    ],
)
def test_spoken_numbers(text: str, values: list[int]) -> None:
    assert [s.value for s in numbers_in(tokenize(text))] == values


@pytest.mark.parametrize(
    "text,day,clock",
    [
        ("a table for four at seven thirty tomorrow", "2026-12-06", "19:30"),
        ("A table for four at 7.30 tomorrow.", "2026-12-06", "19:30"),
        ("next Friday at noon", "2026-12-11", "12:00"),
        ("on Friday at 8 pm", "2026-12-11", "20:00"),
        ("this Saturday at midnight", "2026-12-05", "00:00"),
        ("Saturday at nine", "2026-12-12", "09:00"),
        ("tonight at eight", "2026-12-05", "20:00"),
        ("tomorrow morning at nine", "2026-12-06", "09:00"),
        ("at eight tomorrow night", "2026-12-06", "20:00"),
        ("the fifth of January at half past six", "2027-01-05", "18:30"),
        ("June 5th at 7:30 p.m.", "2027-06-05", "19:30"),
        ("on the 21st at quarter to eight", "2026-12-21", "19:45"),
        ("the day after tomorrow at one", "2026-12-07", "13:00"),
        ("in two hours", "2026-12-05", "18:19"),
        ("in half an hour", "2026-12-05", "16:49"),
        ("in three days", "2026-12-08", None),
        ("2026-12-24 at 19:00", "2026-12-24", "19:00"),
        ("at ten o'clock in the morning", None, "10:00"),
        ("seven forty five", None, "19:45"),
        ("for two people", None, None),
        ("for four", None, None),
        ("a table for two tonight at eight", "2026-12-05", "20:00"),
        ("Saturday at 730", "2026-12-12", "19:30"),
        # Whisper's renderings of one spoken time, and the British "half seven".
        ("tomorrow at 7:30", "2026-12-06", "19:30"),
        ("tomorrow at seven-thirty", "2026-12-06", "19:30"),
        ("tomorrow at 7 30", "2026-12-06", "19:30"),
        ("tomorrow, 7.30.", "2026-12-06", "19:30"),
        ("tomorrow at 7.30pm", "2026-12-06", "19:30"),
        ("tomorrow at 1930", "2026-12-06", "19:30"),
        ("next Wednesday at 9:15 a.m.", "2026-12-09", "09:15"),
        ("tomorrow at half seven", "2026-12-06", "19:30"),
        ("half eight on Friday", "2026-12-11", "08:30"),
    ],
)
def test_times_and_dates_against_the_session_clock(text: str, day: str | None, clock: str | None) -> None:
    m = find_moment(tokenize(text), NOW)
    assert (m.day.isoformat() if m.day else None, m.clock.strftime("%H:%M") if m.clock else None) == (day, clock)


def test_a_bare_number_is_a_time_only_when_it_answers_for_what_time() -> None:
    assert find_moment(tokenize("seven"), NOW).clock is None
    clock = find_moment(tokenize("seven"), NOW, answer=True).clock
    assert clock is not None and clock.strftime("%H:%M") == "19:00"


@pytest.mark.parametrize(
    "text,number",
    [
        ("my number is five five five, one two three four", "5551234"),
        ("plus four four seven nine double one, two three four five six", "+44791123456"),
        ("call me on 555-123-4567", "5551234567"),
        ("oh seven seven double oh one two three four five six", "07700123456"),
        ("zero zero four four two oh seven nine four six oh one two three", "+442079460123"),
        ("one two three", None),  # too short for a phone number
    ],
)
def test_phone_numbers(text: str, number: str | None) -> None:
    got = phone_number(tokenize(text))
    assert (got[0] if got else None) == number


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SEATING = {
    "type": "object",
    "properties": {
        "seating": {"type": "string", "enum": ["indoor", "outdoor", "bar"]},
        "guests": {"type": "integer", "maximum": 10},
        "name": {"type": "string"},
        "high_chair": {"type": "boolean", "description": "Whether a high chair is needed"},
    },
}
APPOINTMENT = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "format": "date"},
        "time": {"type": "string", "format": "time"},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "required": ["date", "time"],
}
ORDER = {
    "type": "object",
    "properties": {"order_number": {"type": "string"}, "adults": {"type": "integer"}, "children": {"type": "integer"}},
}
DATETIME = {"type": "object", "properties": {"start": {"type": "string", "format": "date-time"}}}
TEXT_ME = {"type": "object", "properties": {"phone_number": {"type": "string"}}, "required": ["phone_number"]}
NOTES = {"type": "object", "properties": {"terminal": {"type": "string"}}, "required": ["terminal"]}


@pytest.mark.parametrize(
    "schema,text,asking,values,unusable",
    [
        (RESERVE, "a table for four at seven thirty tomorrow", None, {"party_size": 4, "time": "2026-12-06T19:30"}, ()),
        (RESERVE, "I need a table for 12 people next Friday at noon", None,
         {"party_size": 12, "time": "2026-12-11T12:00"}, ()),
        (RESERVE, "book a table", None, {}, ()),
        (RESERVE, "a table for forty people", None, {}, ("party_size",)),  # above the maximum: asked again
        (RESERVE, "four please", "party_size", {"party_size": 4}, ()),
        (RESERVE, "seven", "time", {"time": "19:00"}, ()),
        (RESERVE, "hmm, not sure", "time", {}, ("time",)),
        (WEATHER, "What is the weather like in New York tomorrow?", None, {"city": "New York"}, ()),
        (WEATHER, "Paris.", "city", {"city": "Paris"}, ()),
        # Not a city: a number or a question word heard for a one-word answer is asked for again, not passed on.
        (WEATHER, "For one.", "city", {}, ("city",)),
        (WEATHER, "For when?", "city", {}, ("city",)),
        (NOTES, "Two.", "terminal", {"terminal": "Two"}, ()),  # a number may be a free string elsewhere
        (SEATING, "Two guests on the outdoor terrace please, under the name Smith", None,
         {"seating": "outdoor", "guests": 2, "name": "Smith"}, ()),
        (SEATING, "It's John Smith.", "name", {"name": "John Smith"}, ()),
        (SEATING, "yes please", "high_chair", {"high_chair": True}, ()),
        (SEATING, "no, we don't need one", "high_chair", {"high_chair": False}, ()),
        (SEATING, "somewhere at the bar", None, {"seating": "bar"}, ()),
        (APPOINTMENT, "next Monday at 9 am, my number is oh seven seven double oh one two three four five six", None,
         {"date": "2026-12-07", "time": "09:00", "phone": "07700123456"}, ()),
        (APPOINTMENT, "it's jane at example dot com", "email", {"email": "jane@example.com"}, ()),
        (ORDER, "order number one two three four five for two adults and three children", None,
         {"order_number": "12345", "adults": 2, "children": 3}, ()),
        (TEXT_ME, "Could you send the details by text to oh two oh, seven nine four six, oh oh one one?", None,
         {"phone_number": "02079460011"}, ()),  # a tool without a time: no digits are taken for one
        (DATETIME, "at seven thirty", None, {"start": "2026-12-05T19:30:00+00:00"}, ()),
        (DATETIME, "at nine", None, {"start": "2026-12-06T09:00:00+00:00"}, ()),  # 09:00 has passed today
    ],
)  # fmt: skip
def test_extract_reads_the_declared_parameters(
    schema: dict[str, Any], text: str, asking: str | None, values: dict[str, Any], unusable: tuple[str, ...]
) -> None:
    got = extract(schema, text, NOW, asking=asking)
    assert got.values == values and got.unusable == unusable
    assert all(type(v) is type(values[k]) for k, v in got.values.items())  # an int is an int, not "4"


def test_without_a_clock_relative_days_are_not_guessed() -> None:
    assert extract(RESERVE, "a table for four at seven thirty tomorrow", None).values == {"party_size": 4}


@pytest.mark.parametrize(
    "name,schema,kind",
    [
        ("party_size", {"type": "integer"}, Kind.INTEGER),
        ("time", {"type": "string"}, Kind.MOMENT),
        ("when", {"type": "string"}, Kind.MOMENT),
        ("date", {"type": "string"}, Kind.DATE),
        ("start", {"type": "string", "format": "date-time"}, Kind.DATETIME),
        ("phone_number", {"type": "string"}, Kind.PHONE),
        ("customer_name", {"type": "string"}, Kind.NAME),
        ("order_id", {"type": "string"}, Kind.DIGITS),
        ("seating", {"type": "string", "enum": ["a", "b"]}, Kind.ENUM),
        ("notes", {"type": ["string", "null"]}, Kind.TEXT),
        ("vip", {"type": "boolean"}, Kind.BOOLEAN),
    ],
)
def test_parameter_kinds(name: str, schema: dict[str, Any], kind: Kind) -> None:
    (p,) = params_of({"type": "object", "properties": {name: schema}})
    assert p.kind is kind


@pytest.mark.parametrize(
    "arguments,problems",
    [
        ({"party_size": 4, "time": "19:30"}, {}),
        ({"party_size": "4", "time": "19:30"}, {"party_size": "must be integer"}),
        ({"party_size": True, "time": "19:30"}, {"party_size": "must be integer"}),
        ({"party_size": 0, "time": "19:30"}, {"party_size": "must be at least 1"}),
        ({"time": "19:30"}, {"party_size": "is required"}),
    ],
)
def test_validate_against_the_schema(arguments: dict[str, Any], problems: dict[str, str]) -> None:
    assert validate(RESERVE, arguments) == problems


def test_validate_checks_enums_and_formats() -> None:
    assert validate(SEATING, {"seating": "roof"}) == {"seating": "must be one of indoor, outdoor, bar"}
    assert validate(APPOINTMENT, {"date": "tomorrow", "time": "09:00"}) == {"date": "must be a date"}


@pytest.mark.parametrize(
    "name,schema,question",
    [
        ("party_size", {"type": "integer"}, "For how many people?"),
        ("time", {"type": "string"}, "For what day and time?"),
        ("date", {"type": "string", "format": "date"}, "For which day?"),
        ("phone", {"type": "string"}, "What phone number should I use?"),
        ("name", {"type": "string"}, "What name should I put that under?"),
        ("seating", {"type": "string", "enum": ["indoor", "outdoor"]}, "Would you like indoor or outdoor?"),
        ("city", {"type": "string"}, "What is the city?"),
        ("city", {"type": "string", "description": "The city to look up"}, "What is the city to look up?"),
    ],
)
def test_follow_up_questions(name: str, schema: dict[str, Any], question: str) -> None:
    (p,) = params_of({"type": "object", "properties": {name: schema}})
    assert question_for(p) == question


def test_slot_filling_asks_for_each_missing_argument_then_calls() -> None:
    first = start("reserve_table", RESERVE, extract(RESERVE, "I'd like to book a table", NOW))
    assert isinstance(first, Ask) and first.text == "For how many people?" and first.state.asking == "party_size"
    second = answer(first.state, RESERVE, extract(RESERVE, "four", NOW, asking="party_size"))
    assert isinstance(second, Ask) and second.state.asking == "time" and second.state.arguments == {"party_size": 4}
    done = answer(second.state, RESERVE, extract(RESERVE, "tomorrow at eight pm", NOW, asking="time"))
    assert done == Ready("reserve_table", {"party_size": 4, "time": "2026-12-06T20:00"}, {})


def test_an_unusable_answer_is_asked_for_again_then_given_up() -> None:
    state = SlotFill("reserve_table", {"party_size": 4}, "time")
    for reasks in (1, 2):
        again = answer(state, RESERVE, extract(RESERVE, "hmm, I'm not sure", NOW, asking="time"))
        assert isinstance(again, Ask) and again.text.startswith("Sorry, I didn't get the time.")
        assert again.state.reasks == reasks and again.state.arguments == {"party_size": 4}
        state = again.state
    assert isinstance(answer(state, RESERVE, extract(RESERVE, "pass", NOW, asking="time")), GiveUp)


def test_an_out_of_range_value_is_asked_for_again_not_passed_on() -> None:
    plan = start("reserve_table", RESERVE, extract(RESERVE, "a table for forty at seven tonight", NOW))
    assert isinstance(plan, Ask) and plan.state.asking == "party_size" and "party_size" not in plan.state.arguments
    assert plan.text == "Sorry, I didn't get the party size. For how many people?"


def test_defaults_fill_only_when_they_fit_and_the_caller_said_nothing_else() -> None:
    plan = start("reserve_table", RESERVE, extract(RESERVE, "for two at 8 pm", NOW), defaults={"party_size": "x"})
    assert isinstance(plan, Ready) and plan.arguments == {"party_size": 2, "time": "20:00"}


@pytest.mark.parametrize(
    "intent,score,bound,direct,chosen",
    [
        ("book_table", 0.9, {"book_table": "reserve_table"}, {"reserve_table": 0.5}, "reserve_table"),
        (None, 0.2, {}, {"get_weather": 0.44}, "get_weather"),
        (None, 0.2, {}, {"get_weather": 0.37}, None),
        ("human_agent", 0.43, {}, {"end_call": 0.42}, None),  # a plain intent closer than the tool: no call
        # A weakly matched intent bound to one tool loses to a tool the words are much closer to.
        ("book_table", 0.4, {"book_table": "reserve_table"}, {"reserve_table": 0.18, "order_taxi": 0.55}, "order_taxi"),
        ("opening_hours", 0.95, {}, {"get_weather": 0.4}, None),  # a better non-tool intent wins
        ("opening_hours", 0.45, {}, {"get_hours": 0.5}, "get_hours"),
    ],
)
def test_choose_tool(
    intent: str | None, score: float, bound: dict[str, str], direct: dict[str, float], chosen: str | None
) -> None:
    assert choose_tool(intent, score, bound, direct) == chosen


def test_words_giving_every_required_argument_are_evidence_for_the_tool() -> None:
    # "We are a party of twelve. Can we come tomorrow at one?": opening_hours matched first, book_table (bound to
    # reserve_table) close behind, and the words give reserve_table's party size and time.
    bound = {"book_table": "reserve_table"}
    scores = {"opening_hours": 0.37, "book_table": 0.34, "takeaway": 0.33}
    direct = {"reserve_table": 0.26, "book_appointment": 0.2}
    given = {"reserve_table", "book_appointment"}
    assert choose_tool("opening_hours", 0.37, bound, direct, scores, given.__contains__) == "reserve_table"
    assert choose_tool("opening_hours", 0.37, bound, direct, scores) is None  # without the arguments: the intent
    assert choose_tool("opening_hours", 0.37, bound, direct, scores, lambda t: t == "book_appointment") is None
    # An intent bound to a tool is the request: another tool's arguments do not override it ("I'd like to cancel my
    # booking for tomorrow at eight" gives book_appointment a date and a time).
    near = {"reserve_table": 0.3, "book_appointment": 0.36}
    assert choose_tool("book_table", 0.44, bound, near, scores, given.__contains__) == "reserve_table"
    # A plain intent matched well keeps the tool uncalled, arguments or not ("Are you open tomorrow at one?").
    assert (
        choose_tool("opening_hours", 0.7, bound, direct, {**scores, "opening_hours": 0.7}, given.__contains__) is None
    )


@pytest.mark.parametrize(
    "schema,text,gives",
    [
        (RESERVE, "We are a party of 12. Can we come tomorrow at one?", True),
        (RESERVE, "We are a party of 12.", False),  # the time is missing
        (WEATHER, "I'm calling from London.", False),  # a capitalised word alone is no evidence
        (APPOINTMENT, "Are you open tomorrow at one?", True),
        ({"type": "object", "properties": {}}, "Goodbye.", False),  # nothing required, nothing to give
    ],
)
def test_gives_required(schema: dict[str, Any], text: str, gives: bool) -> None:
    assert gives_required(schema, extract(schema, text, NOW)) is gives


def test_bind_intents_prefers_the_intents_own_tool_then_the_closest_above_the_threshold() -> None:
    sims = {"book_table": {"reserve_table": 0.74, "hang_up": 0.1}, "goodbye": {"hang_up": 0.6}, "menu": {"x": 0.3}}
    tools = {"book_table": "book_table", "goodbye": "end_call", "menu": None}
    assert bind_intents(sims, tools, frozenset({"reserve_table", "hang_up", "x"})) == {
        "book_table": "reserve_table",
        "goodbye": "hang_up",
    }
    assert bind_intents(sims, tools, frozenset({"book_table", "reserve_table"})) == {"book_table": "book_table"}


def test_tool_text() -> None:
    assert tool_text("reserveTable", "Reserve a table.") == ("reserve table: Reserve a table.", "reserve table")
    assert tool_text("hang_up", "") == ("hang up",)


def test_extraction_is_fast() -> None:
    # Not a timing assertion: a smoke check that a long utterance does not blow up (the figure is in bench/).
    long = "a table for four at seven thirty tomorrow " * 20
    assert extract(RESERVE, long, NOW + timedelta(0)).values["party_size"] == 4


def test_gist_drops_the_values_from_a_request() -> None:
    assert gist("Where is my order? It's order one two three four five.") == "where is my order it's order"
    assert gist("A table for 4 at 7:30") == "a table for at"


def test_speech_hint_is_the_pending_questions_choices_else_the_declared_enums() -> None:
    car = {"type": "string", "enum": ["standard", "van", "electric_car"]}
    taxi = {"type": "object", "properties": {"car": car}, "required": ["car"]}
    seat = {"type": "object", "properties": {"seating": SEATING["properties"]["seating"]}, "required": ["seating"]}
    assert speech_hint([RESERVE, seat, taxi, seat], None) == "indoor, outdoor, bar, standard, van, electric car"
    asked = start("order_taxi", taxi, extract(taxi, "I need a taxi", NOW))
    assert isinstance(asked, Ask) and speech_hint([RESERVE, seat], asked.state) == "standard, van, electric car"
    # A question without choices: the declared enums still; no enum anywhere: no hint.
    assert speech_hint([seat], SlotFill("reserve_table", {}, "time")) == "indoor, outdoor, bar"
    assert speech_hint([RESERVE, WEATHER], None) == ""
    optional = {"type": "object", "properties": {"mode": {"type": "string", "enum": ["cold", "warm"]}}}
    assert speech_hint([optional], None) == ""  # an optional enum is seldom the caller's to say
