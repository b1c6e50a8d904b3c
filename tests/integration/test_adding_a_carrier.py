"""docs/how-to/carriers/adding-a-carrier.md stays true: its example carrier ("Acme", the page's first code block,
loaded as it is written), registered with one line, gets its doors, its config table and its secret from its
description alone, and a call placed through it reaches the agent on the real gateway
(loopback, spec-following fake agent)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.carriers import registry
from gateway.carriers.base import Dialect
from gateway.carriers.spec import CarrierSpec
from gateway.config import load_settings
from gateway.errors import ConfigError
from tests.support.audio import tone

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "carriers" / "adding-a-carrier.md"
KEY = "acme-signing-key"


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert code is not None, "docs/how-to/carriers/adding-a-carrier.md lost its example module"
    module = types.ModuleType("acme_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(code.group(1), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own documentation's code
    monkeypatch.setattr(registry, "CARRIERS", (*registry.CARRIERS, module.SPEC))  # the one registry line
    yield module


def test_the_example_is_a_complete_carrier(acme: Any, tmp_path: Path) -> None:
    assert isinstance(acme.SPEC, CarrierSpec) and isinstance(acme.SPEC.dialect(None), Dialect)
    settings = load_settings(None, env={"ACME_SIGNING_KEY": KEY})
    assert settings.carriers.acme == acme.AcmeSettings()
    assert settings.open_doors()["acme"] is True and settings.carrier_door("acme").secret("signing_key") == KEY
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[carriers.acme]\nkeep_alive_s = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="carriers.acme.keep_alive_s: must be 1..300"):
        load_settings(cfg, env={"ACME_SIGNING_KEY": KEY})


async def test_a_call_through_the_example_carrier_reaches_the_agent(acme: Any, start_gateway, http, fake_agent):
    gw = await start_gateway(ACME_SIGNING_KEY=KEY)
    body = json.dumps({"call_id": "acme-call-1", "from": "+15550001111", "to": "+15550002222"}).encode()
    headers = {"Content-Type": "application/json"}
    async with http.post(gw.base_url + "/acme/voice", data=body, headers=headers) as r:
        assert r.status == 403  # unsigned
    headers[acme.SIGNATURE_HEADER] = acme.signature(KEY, body)
    async with http.post(gw.base_url + "/acme/voice", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        stream = (await r.json())["stream"]
    assert stream["url"] == gw.base_url.replace("http://", "ws://") + "/acme/stream" and stream["keep_alive_s"] == 30
    ws = await http.ws_connect(stream["url"])
    await ws.send_str(
        json.dumps(
            {"event": "start", "stream_id": "acme-stream-1", "call_id": "acme-call-1", "params": stream["params"]}
        )
    )
    session = await fake_agent.session(timeout=10)  # the token was accepted at the acme door
    await session.reply(tone(600, 0.2, 24000))
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            if event["event"] == "play":
                break
    assert event["stream_id"] == "acme-stream-1" and base64.b64decode(event["payload"])
    await ws.send_str(json.dumps({"event": "stop", "stream_id": "acme-stream-1"}))
    async with asyncio.timeout(5):
        while not ws.closed:
            await ws.receive()
