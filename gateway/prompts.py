"""Bundled spoken prompts the gateway plays on its own, without an agent: raw 8 kHz μ-law (Twilio's format, so they
are sent as they are), generated once with the local agent's TTS by ``scripts/make_prompts.py`` and committed under
``gateway/assets/``. Pure apart from reading the packaged file once.

- ``agent_unavailable``: the agent could not be reached, or its session failed for good
  (docs/architecture/failure-behaviour.md#agent-faults).
- ``goodbye``: the gateway ends a live call itself (drain deadline on shutdown, maximum call duration).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["PROMPT_TEXTS", "AGENT_UNAVAILABLE", "GOODBYE", "prompt_ulaw", "prompt_path"]

AGENT_UNAVAILABLE = "agent_unavailable"
GOODBYE = "goodbye"

#: What each prompt says; scripts/make_prompts.py renders these and the tests check the files exist and fit.
PROMPT_TEXTS = {
    AGENT_UNAVAILABLE: "Sorry, we can't take your call right now. Please try again later.",
    GOODBYE: "Sorry, we have to end the call now. Goodbye.",
}

_ASSETS = Path(__file__).resolve().parent / "assets"


def prompt_path(name: str) -> Path:
    if name not in PROMPT_TEXTS:
        raise KeyError(f"unknown prompt {name!r}")
    return _ASSETS / f"{name}.ulaw"


@functools.cache
def prompt_ulaw(name: str) -> bytes:
    """The prompt as raw μ-law 8 kHz mono bytes, a whole number of 20 ms frames."""
    return prompt_path(name).read_bytes()
