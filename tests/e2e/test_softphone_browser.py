"""The softphone in a real headless Chromium, against the real gateway with the embedded local agent.

Chromium's fake microphone plays a WAV of the caller asking "what time do you open"; the test drives the page over
the DevTools protocol (a WebSocket, no Selenium), clicks Call, waits for the greeting, the caller's transcript and
the agent's answer in the page's timeline, checks that agent audio was played and marks were echoed, and saves a
screenshot (artifacts/softphone.png; with UPDATE_DOCS=1 also docs/softphone.png, which the docs pages show)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import tempfile
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import websockets
from aiohttp import web

from gateway.app import create_app
from gateway.audio import g711
from gateway.config import SoftphoneSettings
from gateway.keys import METRICS
from gateway.simulator.caller import CALLER_LENGTH_SCALE
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models

pytestmark = pytest.mark.speech

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
WORKLET = ROOT / "gateway" / "softphone" / "static" / "worklet.js"


@pytest.fixture(scope="session")
def models() -> Any:
    return shared_speech_models()


def caller_wav(models: Any, path: Path, lead_s: float, text: str = "What time do you open?") -> float:
    """48 kHz mono PCM16: ``lead_s`` of silence, ``text`` in the caller's voice, then 30 s of silence (Chromium
    loops the file; the call is over long before it would repeat). Returns the speech's length in seconds."""
    speech = b"".join(
        pcm
        for _s, pcm in models.tts.synthesize(text, length_scale=CALLER_LENGTH_SCALE, noise_scale=0.0, noise_w_scale=0.0)
    )
    x = np.frombuffer(speech, dtype="<i2").astype(np.float32) / 32768.0
    y = soxr.resample(x, models.tts.SAMPLE_RATE, 48000)
    pcm = np.clip(np.round(y * 32767), -32768, 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(bytes(2 * int(lead_s * 48000)) + pcm + bytes(2 * 30 * 48000))
    return len(y) / 48000


class Cdp:
    """A minimal Chrome DevTools Protocol client over one WebSocket, with one attached page session."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.session: str | None = None
        #: CDP event name -> handler, run as its own task (it may send commands; the reader must keep reading)
        self.on: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read(), name="cdp.reader")

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            handler = self.on.get(msg.get("method", ""))
            if handler is not None:
                task = asyncio.create_task(handler(msg.get("params", {})), name="cdp.handler")
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
                continue
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        await self._ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"CDP {method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str, **kw: Any) -> Any:
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True, **kw)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page exception: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def close(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, websockets.ConnectionClosed):
            pass
        await self._ws.close()


async def launch_chromium(wav: Path, profile: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
        "--remote-debugging-port=0", "--window-size=1100,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    port_file = profile / "DevToolsActivePort"
    async with asyncio.timeout(30):
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.returncode is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}")
            await asyncio.sleep(0.1)
    port, path = port_file.read_text().splitlines()[:2]
    return proc, f"ws://127.0.0.1:{port}{path}"


async def stop_chromium(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class LoginPrompt:
    """The browser's HTTP auth dialog, answered over CDP (Fetch.authRequired) the way a person would: the first
    time with ``username``/``password``, any later time cancelled, since the browser should not have asked again
    (it caches the answer for the origin and sends it on the page's own requests)."""

    def __init__(self, cdp: Cdp, username: str, password: str) -> None:
        self.cdp, self.username, self.password = cdp, username, password
        self.prompts: list[str] = []  # URLs the browser asked for credentials for

    async def enable(self) -> None:
        self.cdp.on["Fetch.requestPaused"] = self._paused
        self.cdp.on["Fetch.authRequired"] = self._auth_required
        await self.cdp.send("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])

    async def _paused(self, params: dict[str, Any]) -> None:
        await self.cdp.send("Fetch.continueRequest", requestId=params["requestId"])

    async def _auth_required(self, params: dict[str, Any]) -> None:
        self.prompts.append(params["request"]["url"])
        answer: dict[str, Any] = {"response": "CancelAuth"}
        if len(self.prompts) == 1:
            answer = {"response": "ProvideCredentials", "username": self.username, "password": self.password}
        await self.cdp.send("Fetch.continueWithAuth", requestId=params["requestId"], authChallengeResponse=answer)


async def open_page(browser_ws: str, url: str, login: tuple[str, str] | None = None) -> tuple[Cdp, LoginPrompt | None]:
    cdp = Cdp(await websockets.connect(browser_ws, max_size=None))
    target = await cdp.send("Target.createTarget", url="about:blank")
    attached = await cdp.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    cdp.session = attached["sessionId"]
    prompt = None
    if login is not None:
        prompt = LoginPrompt(cdp, *login)
        await prompt.enable()
    await cdp.send("Page.enable")
    await cdp.send("Runtime.enable")
    await cdp.send("Emulation.setDeviceMetricsOverride", width=1000, height=860, deviceScaleFactor=1, mobile=False)
    await cdp.send("Page.navigate", url=url)
    async with asyncio.timeout(15):
        while await cdp.evaluate("document.readyState") != "complete":
            await asyncio.sleep(0.1)
    return cdp, prompt


async def page_state(cdp: Cdp) -> dict[str, Any]:
    return json.loads(await cdp.evaluate("JSON.stringify(window.softphoneState)"))


async def wait_state(cdp: Cdp, pred: Any, timeout: float, what: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                state = await page_state(cdp)
                if state.get("error"):
                    raise AssertionError(f"page error: {state['error']}")
                if pred(state):
                    return state
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; page state: {json.dumps(state)[:3000]}") from None


async def test_softphone_call_in_chromium_hears_the_greeting_and_the_answer(models):
    # The greeting is uninterruptible and speech over it is discarded, so the caller waits it out in silence:
    # the fake microphone starts when the page opens it, the greeting ends ~4 s later; speak at 6 s.
    lead_s = 6.0
    work = Path(tempfile.mkdtemp(prefix="softphone-e2e-"))
    proc = None
    cdp: Cdp | None = None
    try:
        wav = work / "caller.wav"
        speech_s = caller_wav(models, wav, lead_s)
        (work / "profile").mkdir()
        async with serve_gateway(local_agent_settings(), models) as (base, _app):
            proc, browser_ws = await launch_chromium(wav, work / "profile")
            cdp, _ = await open_page(browser_ws, base + "/softphone")
            assert await cdp.evaluate("document.title") == "Softphone · voice gateway"
            # the page's μ-law encoder is bit-identical to the gateway's G.711 (audioop) for all 65536 inputs
            encoder = re.search(r"const SEG_END = .*?\n}\n", WORKLET.read_text(), re.DOTALL)
            assert encoder is not None
            js_ulaw = await cdp.evaluate(
                "(() => {" + encoder.group(0) + "const out = [];"
                "for (let s = -32768; s < 32768; s++) out.push(linearToMulaw(s)); return out; })()"
            )
            assert bytes(js_ulaw) == g711.pcm16_to_ulaw(np.arange(-32768, 32768, dtype="<i2").tobytes())

            await cdp.evaluate("document.getElementById('call').click()", userGesture=True)
            state = await wait_state(cdp, lambda s: s["status"] == "in call", 15, "the call to connect")
            assert state["streamUrl"] == base.replace("http://", "ws://") + "/softphone/stream"  # its own door
            state = await wait_state(cdp, lambda s: s["greeting"], 20, "the greeting")
            assert "thanks for calling" in state["greeting"].lower()
            state = await wait_state(
                cdp, lambda s: s["agentReplies"], lead_s + speech_s + 20, "the answer to the caller's question"
            )
            caller = " ".join(state["callerTranscripts"]).lower()
            assert "open" in caller, caller
            answer = state["agentReplies"][0]["text"].lower()
            assert "nine in the morning" in answer, answer
            # wait until the answer has been played out (marks echoed after playback prove it)
            state = await wait_state(
                cdp, lambda s: s["playedMs"] >= s["receivedMs"] - 100 and s["marksEchoed"] >= 4, 20, "playout"
            )
            assert state["playedMs"] > 5000  # greeting + answer, really played through Web Audio
            assert state["framesSent"] > (lead_s + speech_s) / 0.02 * 0.9  # 20 ms frames from the microphone
            assert state["latenciesMs"] and 0 < state["latenciesMs"][0] < 5000
            assert state["clears"] == 0 and state["error"] is None
            text = await cdp.evaluate("document.getElementById('timeline').innerText")
            assert "nine in the morning" in text.lower() and "open" in text.lower()

            shot = await cdp.send("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            # The test artifact always; the docs' copy only on request, so a test run never dirties the tree.
            targets = [ROOT / "artifacts" / "softphone.png"]
            if os.environ.get("UPDATE_DOCS") == "1":
                targets.append(ROOT / "docs" / "softphone.png")
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png)

            await cdp.evaluate("document.getElementById('call').click()", userGesture=True)
            state = await wait_state(cdp, lambda s: s["ended"], 10, "call.ended in the event feed")
            assert state["ended"]["outcome"] == "caller_hangup"
    finally:
        if cdp is not None:
            await cdp.close()
        if proc is not None:
            await stop_chromium(proc)
        shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_on(settings: Any, models: Any, port: int) -> AsyncIterator[web.Application]:
    """Like serve_gateway, on a port chosen beforehand: the public URL has to name it before the app exists."""
    app = create_app(settings, local_agent_models=models)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield app
    finally:
        await runner.cleanup()


async def test_a_public_softphone_asks_the_browser_for_the_operator_key_once(models):
    # A gateway with a public URL (here its own loopback address, so the browser can reach what the TwiML names)
    # serves the softphone only with GATEWAY_API_KEY. The browser's login prompt is answered once; from then on it
    # must send the key by itself on the page's scripts, its worklet, the dial fetch, the EventSource and the
    # WebSocket, or the call would not get through (a second prompt is cancelled, as a user would give up).
    key = "e2e-operator-key"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = local_agent_settings(GATEWAY_PUBLIC_URL=base, GATEWAY_API_KEY=key)
    settings = dataclasses.replace(settings, softphone=SoftphoneSettings(enabled="on"))
    work = Path(tempfile.mkdtemp(prefix="softphone-e2e-"))
    proc = None
    cdp: Cdp | None = None
    try:
        wav = work / "caller.wav"
        caller_wav(models, wav, 30.0)  # silence through the call: this test is about who gets in
        (work / "profile").mkdir()
        async with serve_on(settings, models, port) as app:
            proc, browser_ws = await launch_chromium(wav, work / "profile")
            cdp, prompt = await open_page(browser_ws, base + "/softphone", login=("operator", key))
            assert prompt is not None
            assert await cdp.evaluate("document.title") == "Softphone · voice gateway"
            await cdp.evaluate("document.getElementById('call').click()", userGesture=True)
            state = await wait_state(cdp, lambda s: s["status"] == "in call", 15, "the call to connect")
            assert state["streamUrl"] == base.replace("http://", "ws://") + "/softphone/stream"
            # the greeting's transcript comes over the EventSource, its audio over the WebSocket
            state = await wait_state(cdp, lambda s: s["greeting"] and s["marksEchoed"] >= 1, 20, "the greeting")
            assert "thanks for calling" in state["greeting"].lower() and state["playedMs"] > 0
            await cdp.evaluate("document.getElementById('call').click()", userGesture=True)
            state = await wait_state(cdp, lambda s: s["ended"], 10, "call.ended in the event feed")
            assert state["ended"]["outcome"] == "caller_hangup"
            assert prompt.prompts == [base + "/softphone"]  # asked once, for the page, never again
            registry = app[METRICS].registry

            def refused(reason: str) -> float:
                return (
                    registry.get_sample_value(
                        "voice_gateway_call_refusals_total", {"stage": "softphone", "reason": reason}
                    )
                    or 0.0
                )

            assert refused("no_credential") == 1  # the page's first load: the challenge that made it prompt
            assert refused("bad_credential") == 0 and refused("cross_origin") == 0
    finally:
        if cdp is not None:
            await cdp.close()
        if proc is not None:
            await stop_chromium(proc)
        shutil.rmtree(work, ignore_errors=True)
