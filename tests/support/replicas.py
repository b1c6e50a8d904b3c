"""Real processes for the scale-out tests and benchmark (docs/architecture/scale-out.md): a ``redis-server`` on a free
loopback port in a temporary directory, and gateway replicas (``python -m gateway serve``) sharing it and one
``GATEWAY_TOKEN_SECRET``. Each replica's JSON log lines are collected as they come."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int = 0
    dir: str = ""
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run scripts/bootstrap --test"
        self.port = self.port or free_port()
        self.dir = self.dir or tempfile.mkdtemp(prefix="redis-")
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while await self.command("PING") != "PONG":
                await asyncio.sleep(0.05)

    async def command(self, *args: str) -> str:
        """One command over RESP (inline), its reply as text; '' if the server does not answer."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return ""
        try:
            writer.write(("*%d\r\n" % len(args) + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
            await writer.drain()
            head = await reader.readline()
            if head.startswith(b"$"):
                n = int(head[1:])
                return "" if n < 0 else (await reader.readexactly(n + 2))[:-2].decode()
            return head[1:].strip().decode()
        finally:
            writer.close()

    async def commandstats(self) -> dict[str, int]:
        """INFO commandstats: calls per command (``evalsha``, ``hset`` …)."""
        out: dict[str, int] = {}
        for line in (await self.command("INFO", "commandstats")).splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_") :].split(":", 1)
                fields = dict(kv.split("=", 1) for kv in rest.split(","))
                out[name] = int(fields["calls"])
        return out

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()
        self.proc = None


@dataclass
class Replica:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        joined = [e for e in self.logs if e.get("event") == "cluster.joined"]
        return str(joined[-1]["address"]) if joined else ""

    @property
    def replica_id(self) -> str:
        joined = [e for e in self.logs if e.get("event") == "cluster.joined"]
        return str(joined[-1]["replica"]) if joined else ""

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    async def wait_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while not (found := self.events(name, **match)):
                await asyncio.sleep(0.02)
        return found[-1]

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def start_replica(name: str, config: str, env: dict[str, str], *, port: int = 0) -> Replica:
    """``python -m gateway serve`` on loopback with ``config`` (TOML text) and ``env`` on top of this one's."""
    port = port or free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        f.name,
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    replica = Replica(name, port, proc)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                replica.logs.append(json.loads(raw))
            except ValueError:
                replica.logs.append({"event": "<raw>", "text": raw.decode(errors="replace")})

    replica.reader = asyncio.get_running_loop().create_task(read())
    return replica


async def wait_ready(replicas: list[Replica], http: aiohttp.ClientSession, timeout: float = 30.0) -> None:
    """Until each replica answers /readyz and has joined the cluster."""
    async with asyncio.timeout(timeout):
        for r in replicas:
            while True:
                assert r.proc.returncode is None, r.logs[-20:]
                try:
                    async with http.get(r.base_url + "/readyz") as resp:
                        if resp.status == 200 and r.internal_url:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
