"""IntentMatcher's decision rule, and the committed intents.toml it is used with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.local_agent.speech import IntentMatcher

# --- the decision rule, with a fake embedder (pure, fast) -----------------------------------------------------


class TableEmbedder:
    """Embeds by table lookup, so every similarity in a test is chosen by hand."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts])


FAKE = TableEmbedder(
    {
        "hours a": [1, 0, 0],
        "hours b": [0.8, 0.6, 0],
        "bye": [0, 0, 1],
        "near hours a": [0.95, 0.0, 0.312],  # cos 0.95 with "hours a", 0.31 with "bye"
        "between": [0.6, 0.0, 0.8],  # cos 0.6 with "hours a", 0.8 with "bye"
        "far": [0, 1, 0],  # cos 0.6 with "hours b", 0 with the rest
        "orthogonal": [-1, 0, 0],
    }
)
INTENTS = {"opening_hours": ["hours a", "hours b"], "goodbye": ["bye"]}


@pytest.mark.parametrize(
    ("text", "intent", "score"),
    [
        ("near hours a", "opening_hours", 0.95),
        ("between", "goodbye", 0.8),  # nearest single example wins
        ("far", "opening_hours", 0.6),
        ("orthogonal", None, 0.0),  # best is 0.0 ("bye"), below the threshold
    ],
)
def test_nearest_example_decides(text: str, intent: str | None, score: float) -> None:
    got_intent, got_score = IntentMatcher(FAKE, INTENTS, threshold=0.35).match(text)
    assert got_intent == intent
    assert got_score == pytest.approx(score, abs=1e-3)


def test_below_threshold_gives_none_but_still_reports_the_score() -> None:
    assert IntentMatcher(FAKE, INTENTS, threshold=0.7).match("far") == (None, pytest.approx(0.6, abs=1e-3))
    assert IntentMatcher(FAKE, INTENTS, threshold=0.55).match("far")[0] == "opening_hours"


def test_blank_text_matches_nothing_without_embedding() -> None:
    fake = TableEmbedder(FAKE.table)
    matcher = IntentMatcher(fake, INTENTS)
    calls = len(fake.calls)
    assert matcher.match("  ") == (None, 0.0)
    assert len(fake.calls) == calls


def test_scores_lists_every_intent() -> None:
    scores = IntentMatcher(FAKE, INTENTS).scores("between")
    assert scores == {"opening_hours": pytest.approx(0.6, abs=1e-3), "goodbye": pytest.approx(0.8, abs=1e-3)}


@pytest.mark.parametrize(
    ("intents", "threshold", "error"),
    [
        ({}, 0.35, ValueError),
        ({"goodbye": []}, 0.35, ValueError),
        ({"goodbye": ["  "]}, 0.35, ValueError),
        ({"goodbye": "bye"}, 0.35, TypeError),
        (INTENTS, 1.5, ValueError),
    ],
)
def test_invalid_configuration_is_rejected(intents: Any, threshold: float, error: type[Exception]) -> None:
    with pytest.raises(error):
        IntentMatcher(FAKE, intents, threshold=threshold)


# --- config/local_agent/intents.toml ----------------------------------------------------------------------------


def test_intents_toml_is_well_formed(intents_config: dict[str, Any]) -> None:
    assert 0.0 < intents_config["threshold"] < 1.0
    assert intents_config["fallback_reply"].strip()
    intents = intents_config["intent"]
    names = [i["name"] for i in intents]
    assert len(names) == len(set(names)) >= 12
    for intent in intents:
        allowed = {"name", "examples", "reply", "tool", "arguments", "reply_after_tool", "description"}
        assert set(intent) <= allowed, intent
        assert 3 <= len(intent["examples"]) <= 7, intent["name"]
        assert all(isinstance(e, str) and e.strip() for e in intent["examples"])
        assert intent["reply"].strip()
        if "tool" in intent:
            assert isinstance(intent["arguments"], dict)
            assert intent["reply_after_tool"].strip()
    tools = {i["name"]: (i.get("tool"), i.get("arguments")) for i in intents}
    assert tools["goodbye"] == ("end_call", {})
    assert tools["human_agent"] == ("transfer_call", {"destination": "front desk"})
    assert tools["book_table"][0] == "book_table"


def test_phrases_are_paraphrases_not_copies_of_examples(
    intents_config: dict[str, Any], phrases: list[dict[str, str]]
) -> None:
    def norm(s: str) -> str:
        return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())

    examples = {norm(e) for i in intents_config["intent"] for e in i["examples"]}
    names = {i["name"] for i in intents_config["intent"]}
    assert len(phrases) >= 18
    for p in phrases:
        assert p["intent"] in names, p
        assert norm(p["text"]) not in examples, p


@pytest.mark.speech
def test_reference_text_of_every_phrase_reaches_its_intent(
    intent_matcher: IntentMatcher, phrases: list[dict[str, str]]
) -> None:
    wrong = [(p["text"], p["intent"], intent_matcher.match(p["text"])) for p in phrases]
    wrong = [w for w in wrong if w[2][0] != w[1]]
    assert not wrong


@pytest.mark.speech
@pytest.mark.parametrize(
    "text",
    ["What's the weather like in Paris?", "blah blah purple monkey", "My printer keeps jamming on page two."],
)
def test_out_of_domain_text_matches_nothing(intent_matcher: IntentMatcher, text: str) -> None:
    assert intent_matcher.match(text)[0] is None
