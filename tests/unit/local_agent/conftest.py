"""Fixtures for the local agent's speech tests: the models are loaded once per test session (~1–2 s)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.local_agent.speech import IntentMatcher, SpeechModels

ROOT = Path(__file__).resolve().parents[3]
INTENTS_TOML = ROOT / "config" / "local_agent" / "intents.toml"
PHRASES_TOML = ROOT / "tests" / "fixtures" / "phrases.toml"


@pytest.fixture(scope="session")
def speech_models() -> SpeechModels:
    # Tests run one thing at a time, so let Whisper and Piper use both cores of the CI machine.
    return SpeechModels.load(cpu_threads=2)


@pytest.fixture(scope="session")
def intents_config() -> dict[str, Any]:
    with open(INTENTS_TOML, "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="session")
def phrases() -> list[dict[str, str]]:
    with open(PHRASES_TOML, "rb") as f:
        return list(tomllib.load(f)["phrase"])


@pytest.fixture(scope="session")
def intent_matcher(speech_models: SpeechModels, intents_config: dict[str, Any]) -> IntentMatcher:
    examples = {intent["name"]: intent["examples"] for intent in intents_config["intent"]}
    return IntentMatcher(speech_models.embedder, examples, threshold=intents_config["threshold"])
