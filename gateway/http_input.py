"""Reading request bodies that anyone on the internet can send: a body we cannot decode is the sender's fault and
gets a 400 with a short reason, never a 500 with a traceback (docs/security.md, "Malformed input").

- :func:`read_form`: an ``application/x-www-form-urlencoded`` (or multipart) body as the carriers' webhooks send
  it, every value of every name kept (signatures are computed over all of them). File uploads are refused: no
  webhook sends one, and a file field has no string value to sign or read.
- :func:`read_json`: a JSON body of at most :data:`MAX_JSON_DEPTH` levels of nesting (Python's decoder recurses,
  so a deeply nested body would otherwise raise ``RecursionError`` deep inside it).

Both also answer 400 for what can go wrong before decoding: a ``Content-Encoding`` the body does not match, an
unknown ``charset``, a chunked body cut short or a peer gone mid-body (:class:`aiohttp.web.RequestPayloadError`,
``LookupError``, ``ConnectionResetError``; the last 400 reaches nobody, but nothing is logged as a server error).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["MAX_JSON_DEPTH", "json_depth_ok", "read_form", "read_json"]

#: Deeper JSON than this is refused before it is decoded. Our bodies are two levels deep; 32 leaves room.
MAX_JSON_DEPTH = 32
#: Reading the body itself failed: the sender's fault (or the sender is gone), never ours.
_UNREADABLE = (web.RequestPayloadError, LookupError, ConnectionResetError)


async def read_form(request: web.Request) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The form body as ``(every value of each name, the first value of each name)``. Raises
    :class:`aiohttp.web.HTTPBadRequest` for a body that is not valid form data (invalid UTF-8 included)."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError, *_UNREADABLE) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid form data ({type(exc).__name__})") from None
    files = [v for v in form.values() if isinstance(v, web.FileField)]
    if files:
        for f in files:
            f.file.close()  # aiohttp spooled it to a temporary file; do not leave that to the collector
        raise web.HTTPBadRequest(text="body is not valid form data (file upload)")
    multi = {k: [str(v) for v in form.getall(k)] for k in set(form.keys())}
    return multi, {k: v[0] for k, v in multi.items()}


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no bracket in ``text`` nests deeper than ``limit`` (brackets inside strings not counted)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


async def read_json(request: web.Request) -> Any:
    """The JSON body, decoded. Raises :class:`aiohttp.web.HTTPBadRequest` for invalid UTF-8, invalid JSON or JSON
    nested deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        raw = await request.read()
    except _UNREADABLE as exc:
        raise web.HTTPBadRequest(text=f"body could not be read ({type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="body is not valid UTF-8") from None
    if not json_depth_ok(text):
        raise web.HTTPBadRequest(text=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="body is not valid JSON") from None
