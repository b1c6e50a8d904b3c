"""The JSON and base64 builders every carrier dialect shares (gateway/carriers/base.py): ``dumps`` for the messages
it sends (media, marks, clears), ``b64`` for their audio. Both are on the per-frame path of some dialects, so they are
library encoders; these tests hold them to the stdlib's output."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.carriers.base import b64, dumps

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
messages = st.recursive(
    st.dictionaries(texts, texts | st.integers() | st.booleans() | st.none(), max_size=4),
    lambda inner: st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def compact(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


@given(msg=messages)
def test_dumps_is_the_same_json_value_as_the_stdlibs(msg: dict[str, Any]) -> None:
    out = dumps(msg)
    assert json.loads(out) == msg
    if out.isascii():  # no text to escape: the very same string
        assert out == compact(msg)


def test_dumps_writes_non_ascii_text_as_utf8_not_escapes() -> None:
    msg = {"event": "mark", "mark": {"name": "größe ✓"}}
    assert dumps(msg) == '{"event":"mark","mark":{"name":"größe ✓"}}'


def test_dumps_escapes_a_lone_surrogate_as_the_stdlib_does() -> None:
    # Only a carrier's own escaped text can bring one ('\\ud800' in an id it sent): not UTF-8, so it stays escaped.
    msg = {"event": "clear", "stream_sid": "MZ\ud800x"}
    assert dumps(msg) == compact(msg) == '{"event":"clear","stream_sid":"MZ\\ud800x"}'


@given(payload=st.binary(max_size=1000))
def test_b64_is_standard_padded_base64_text(payload: bytes) -> None:
    assert b64(payload) == base64.b64encode(payload).decode("ascii")
