"""Helpers for fault-injection tests: a cutting TCP proxy in front of the fake agent, a slow HTTP tool, and config
files. Test modules wrap them in fixtures (``proxy``, ``slow_tool``)."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tests.support.tcp_proxy import TcpProxy


def write_config(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    return f.name


async def start_proxy(fake_agent: Any) -> TcpProxy:
    """A cutting proxy in front of the fake agent; ``proxy.agent_url`` is what the gateway should dial."""
    u = urlsplit(fake_agent.url)
    p = TcpProxy(u.hostname or "127.0.0.1", u.port or 80)
    await p.start()
    p.agent_url = f"ws://127.0.0.1:{p.port}/v1/ws"  # type: ignore[attr-defined]
    return p


async def start_slow_tool(aiohttp_server: Any) -> str:
    """An HTTP tool that answers after 300 ms; returns the [tools.lookup] config table."""

    async def lookup(request: web.Request) -> web.Response:
        args = await request.json()
        await asyncio.sleep(0.3)
        return web.json_response({"found": True, "echo": args})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    server = await aiohttp_server(app)
    return (
        '[profiles.default]\ntools = ["end_call", "lookup"]\n'
        f'[tools.lookup]\nurl = "{server.make_url("/lookup")}"\ndescription = "Look something up."\n'
        'parameters = { type = "object", properties = { q = { type = "string" } } }\n'
    )


def blackhole(link: Any) -> None:
    """A proxy link (tests.support.tcp_proxy) that keeps both sockets open but moves nothing more, either way: a
    network blackhole (packets silently lost: no FIN, no RST, nothing read, nothing answered)."""
    link.gw_writer.transport.pause_reading()
    link.ag_writer.transport.pause_reading()


def deep_stack(task: asyncio.Task[Any]) -> list[str]:
    """Every frame of a suspended task, following its await chain (``Task.get_stack`` shows only the outermost): where
    a task is stuck, for an assertion's message."""
    out, coro = [], task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out
