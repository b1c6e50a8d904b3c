"""gateway/http_input.py: bodies anyone can send are decoded or refused with a 400, never a 500.

``json_depth_ok`` is pure and checked table-driven and against a reference depth over generated JSON; ``read_json``
and ``read_form`` are checked over a loopback server with raw bodies (aiohttp's client would refuse to send most of
them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http_input import MAX_JSON_DEPTH, json_depth_ok, read_form, read_json


# ---- json_depth_ok ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,limit,ok",
    [
        ("", 0, True),
        ("1", 0, True),
        ("[]", 0, False),
        ("[]", 1, True),
        ("[[]]", 1, False),
        ("[{}, [], {}]", 2, True),  # siblings do not add up
        ('{"a": {"b": [{}]}}', 4, True),
        ('{"a": {"b": [{}]}}', 3, False),
        ("[" * 32 + "]" * 32, 32, True),  # exactly the limit
        ("[" * 33 + "]" * 33, 32, False),  # one over
        ("[" * 33, 32, False),  # unclosed: refused before the decoder recurses
        ('["' + "[" * 100 + '"]', 1, True),  # brackets inside a string are text
        ('["{{{{", "]]]]", "[[[["]', 1, True),
        ('["\\"[[[["]', 1, True),  # an escaped quote does not end the string
        ('["\\\\", [[]]]', 2, False),  # an escaped backslash does: the brackets after it count
        ('["\\\\\\"[[["]', 1, True),  # \\ then \" : still inside the string
        ('"\\u005b\\u005b"', 0, True),  # escaped brackets are text
        ("[" * 100000, MAX_JSON_DEPTH, False),
    ],
)
def test_json_depth_ok_counts_only_brackets_outside_strings(text: str, limit: int, ok: bool) -> None:
    assert json_depth_ok(text, limit) is ok


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ab \u00e9\u2028\U0001f600'), max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, limit=st.integers(0, 8), ascii_only=st.booleans())
def test_json_depth_ok_agrees_with_the_decoded_depth(value: Any, limit: int, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_depth_ok(text, limit) is (_depth(value) <= limit)


# ---- read_json / read_form over loopback --------------------------------------------------------------------------
@dataclass
class Server:
    host: str
    port: int
    outcomes: list[str]  # what each request ended with, as the handler saw it ("400", or an exception's name)
    handler_started: asyncio.Event


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A runner as production builds it (gateway.drain: no handler cancellation on disconnect, unlike aiohttp's
    test server), so a peer gone mid-body reaches the handler as it would in production."""
    outcomes: list[str] = []
    started = asyncio.Event()

    async def json_route(request: web.Request) -> web.Response:
        return web.json_response({"value": await read_json(request)})

    async def form_route(request: web.Request) -> web.Response:
        multi, flat = await read_form(request)
        return web.json_response({"multi": multi, "flat": flat})

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        started.set()
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            outcomes.append(str(exc.status))
            raise
        except Exception as exc:  # the test records what would have been a 500
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append(str(resp.status))
        return resp

    app = web.Application(client_max_size=64 * 1024, middlewares=[record])
    app.router.add_post("/json", json_route)
    app.router.add_post("/form", form_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield Server(host, port, outcomes, started)
    finally:
        await runner.cleanup()


async def raw_post(
    server: Server, path: str, content_type: bytes, body: bytes, extra: bytes = b""
) -> tuple[int, bytes]:
    """POST ``body`` byte for byte (no client-side encoding or validation); (status, response body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Type: "
            + content_type
            + b"\r\n"
            + extra
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "body,status,why",
    [
        (b"[" * 60000, 400, b"nested deeper"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), 400, b"nested deeper"),
        (b'{"to": "\xff\xfe"}', 400, b"UTF-8"),
        (b"{", 400, b"not valid JSON"),
        (b"", 400, b"not valid JSON"),
        (b"1" * 5000, 400, b"not valid JSON"),  # int() refuses more than 4300 digits with a ValueError
    ],
)
async def test_read_json_refuses_malformed_bodies_with_400(
    server: Server, body: bytes, status: int, why: bytes
) -> None:
    got, text = await raw_post(server, "/json", JSON, body)
    assert (got, why in text) == (status, True), text


async def test_read_json_decodes_up_to_the_depth_limit(server: Server) -> None:
    body = b"[" * MAX_JSON_DEPTH + b'"[[[["' + b"]" * MAX_JSON_DEPTH
    got, text = await raw_post(server, "/json", JSON, body)
    assert got == 200
    value = json.loads(text)["value"]
    for _ in range(MAX_JSON_DEPTH - 1):
        (value,) = value
    assert value == ["[[[["]


async def test_a_body_whose_content_encoding_lies_is_a_400(server: Server) -> None:
    for path, ctype in (("/json", JSON), ("/form", FORM)):
        got, text = await raw_post(server, path, ctype, b"this is not gzip", b"Content-Encoding: gzip\r\n")
        assert got == 400, (path, text)


@pytest.mark.parametrize("path,ctype", [("/json", JSON), ("/form", FORM)])
async def test_a_peer_gone_mid_body_is_a_400_not_a_server_error(server: Server, path: str, ctype: bytes) -> None:
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: test\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: 100\r\n\r\n"
        + b'{"a"'
    )
    await writer.drain()
    async with asyncio.timeout(5):
        await server.handler_started.wait()  # the handler is reading the body …
        writer.close()  # … when the peer goes
        while not server.outcomes:
            await asyncio.sleep(0.01)
    assert server.outcomes == ["400"]


@pytest.mark.parametrize(
    "content_type,body",
    [
        (FORM, b"CallSid=\xff\xfe"),  # raw invalid UTF-8
        (FORM + b"; charset=no-such-charset", b"CallSid=CA1"),
        (b"multipart/form-data; boundary=XX", b"not multipart at all"),
        (
            b"multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\xfe\r\n--XX--\r\n',
        ),
        (
            b"multipart/form-data; boundary=XX",
            (
                b'--XX\r\nContent-Disposition: form-data; name="a"\r\n'
                b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n"
                b"v\r\n--XX--\r\n"
            ),
        ),
        # a file upload has no place in a webhook (and its str() would be a repr, not a value)
        (
            b"multipart/form-data; boundary=XX",
            b'--XX\r\nContent-Disposition: form-data; name="a"; filename="f.txt"\r\n\r\nv\r\n--XX--\r\n',
        ),
    ],
)
async def test_read_form_refuses_malformed_bodies_with_400(server: Server, content_type: bytes, body: bytes) -> None:
    got, text = await raw_post(server, "/form", content_type, body)
    assert got == 400 and b"form data" in text, text


async def test_read_form_keeps_every_value_of_a_repeated_name(server: Server) -> None:
    # percent-encoded invalid UTF-8 is decodable (as U+FFFD), unlike the raw bytes above
    got, text = await raw_post(server, "/form", FORM, b"a=1&b=%FF&a=2&c=")
    assert got == 200, text
    answer = json.loads(text)
    assert answer["multi"] == {"a": ["1", "2"], "b": ["\ufffd"], "c": [""]}
    assert answer["flat"] == {"a": "1", "b": "\ufffd", "c": ""}
