"""Golden carrier fixtures (tests/fixtures/<carrier>/*.json), built from the documented shapes:
docs/how-to/carriers/<carrier>.md#protocol, and for Twilio docs/architecture/twilio-media-streams.md."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(carrier: str, name: str) -> dict[str, Any]:
    """A fresh copy of one fixture (tests mutate them)."""
    return json.loads((FIXTURES / carrier / f"{name}.json").read_text(encoding="utf-8"))


def text(msg: Any) -> str:
    return json.dumps(msg)


def changed(carrier: str, name: str, change: Callable[[dict[str, Any]], None]) -> str:
    msg = copy.deepcopy(fixture(carrier, name))
    change(msg)
    return text(msg)
