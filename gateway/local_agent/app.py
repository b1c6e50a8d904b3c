"""The local agent's aiohttp application and its standalone runner. Not pure (the app's setup and teardown).

:func:`create_local_agent_app` serves the Voice Agent API's ``GET /v1/ws`` and ``GET /v1/token``, and the REST API of
stored agents and session history, ``/v1/agents`` and ``/v1/sessions`` (:mod:`.store`;
docs/reference/local-agent-api.md). The gateway mounts it at ``/agent`` with ``app.add_subapp("/agent",
create_local_agent_app(...))`` (so ``/agent/v1/ws``); :func:`run_standalone` serves it on its own so any client written
for the cloud API can point at it unchanged (``python -m gateway.local_agent.app --port 8765``).

Set-up happens in a ``cleanup_ctx`` (aiohttp runs a sub-app's contexts with its parent's): the store (its data
directory and thread), the worker pool, the speech models (loaded and warmed up in the pool unless passed in), the
intent matcher, the reply engine and, with an LLM configured, an HTTP client. Shutdown closes every live session
(1001) in ``on_shutdown``, then tears the rest down in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ..errors import ConfigError
from . import protocol as proto
from .brain import IntentEngine, IntentTable, ReplyEngine, load_intents
from .endpoint import handle_websocket
from .runtime import AgentRuntime
from .settings import LlmSettings, LocalAgentSettings, settings_from_env
from .store.http import add_store_routes
from .store.service import SessionStore

if TYPE_CHECKING:
    import aiohttp

    from .speech import IntentMatcher, SpeechModels

__all__ = [
    "API_KEY_KEY",
    "RUNTIME_KEY",
    "RuntimeSlot",
    "create_local_agent_app",
    "local_agent_api_key",
    "local_agent_runtime",
    "main",
    "run_standalone",
    "warm_up",
]

log = structlog.get_logger("local_agent")


class RuntimeSlot:
    """Holds the app's :class:`AgentRuntime` once start-up has built it (an app's state is frozen by then)."""

    __slots__ = ("runtime",)

    def __init__(self) -> None:
        self.runtime: AgentRuntime | None = None


RUNTIME_KEY = web.AppKey("local_agent_runtime", RuntimeSlot)
#: The key this app accepts (generated when the settings set none); the embedding gateway reads it from here.
API_KEY_KEY = web.AppKey("local_agent_api_key", str)


def local_agent_api_key(app: web.Application) -> str:
    return app[API_KEY_KEY]


def local_agent_runtime(app: web.Application) -> AgentRuntime:
    """The running agent (sessions, live connections) of a started app."""
    runtime = app[RUNTIME_KEY].runtime
    if runtime is None:
        raise RuntimeError("the local agent app has not started")
    return runtime


def warm_up(models: SpeechModels) -> None:
    """Blocking: run each model once so the first caller does not pay for lazy initialisation (the first Whisper
    call took ~0.8 s instead of ~0.3 s when measured)."""
    import numpy as np

    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16000) * 30).astype("<i2").tobytes()
    models.vad.stream().push(noise)
    models.stt.transcribe(noise)
    for _ in models.tts.synthesize("Hello."):
        pass
    models.embedder.embed(["hello"])


# Building a matcher embeds every example (~0.5 s); cache it per embedder and intent table, so apps created
# repeatedly over one loaded model set (tests, the gateway restarting its sub-app) pay once.
_MATCHERS: dict[tuple[int, str], tuple[object, IntentMatcher]] = {}
_MATCHERS_LOCK = threading.Lock()


def _matcher_for(models: SpeechModels, table: IntentTable) -> IntentMatcher:
    from .speech import IntentMatcher

    key = (id(models.embedder), json.dumps([table.threshold, table.examples], sort_keys=True))
    with _MATCHERS_LOCK:
        hit = _MATCHERS.get(key)
        if hit is not None and hit[0] is models.embedder:
            return hit[1]
    matcher = IntentMatcher(models.embedder, table.examples, threshold=table.threshold)
    with _MATCHERS_LOCK:
        if len(_MATCHERS) >= 4:
            _MATCHERS.pop(next(iter(_MATCHERS)))
        _MATCHERS[key] = (models.embedder, matcher)
    return matcher


def create_local_agent_app(settings: LocalAgentSettings, models: SpeechModels | None = None) -> web.Application:
    """The local agent as an aiohttp app: ``/v1/ws`` and ``/v1/token``.

    ``models``: a loaded :class:`~gateway.local_agent.speech.SpeechModels` to share (tests, the gateway);
    ``None`` loads them (and warms them up) in the app's start-up. Settings and the intents file are validated
    here, so a bad config fails before the server starts.
    """
    settings.validate()
    table = load_intents(settings.intents_path)
    api_key = settings.api_key or secrets.token_urlsafe(24)
    token_secret = settings.token_secret or secrets.token_bytes(32)

    app = web.Application()
    app[API_KEY_KEY] = api_key
    slot = app[RUNTIME_KEY] = RuntimeSlot()
    stores: list[SessionStore] = []

    def started_store() -> SessionStore:
        if not stores:
            raise web.HTTPServiceUnavailable(text="local agent not started")
        return stores[0]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        from .speech import split_sentences

        executor = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="local-agent")
        http: aiohttp.ClientSession | None = None
        # No data directory configured (tests, embedding without config): a temporary one for this app's life.
        scratch = tempfile.TemporaryDirectory(prefix="local-agent-") if settings.data_dir is None else None
        store = SessionStore(
            settings.data_dir or Path(scratch.name if scratch else "."),
            keep_sessions=settings.keep_sessions,
            record_audio=settings.record_audio,
        )
        purger: asyncio.Task[None] | None = None
        try:
            await store.start()
            stores.append(store)
            for key, agent_id in settings.required_agents:  # a profile's agent_id this agent does not store
                if await store.agent_fields(agent_id) is None:
                    raise ConfigError(
                        f"{key}: the embedded local agent stores no agent {agent_id!r} in {store.data_dir}; "
                        "create it first (POST /agent/v1/agents) or remove the key"
                    )
            loop = asyncio.get_running_loop()
            loaded = models
            if loaded is None:
                from .speech import SpeechModels

                started = time.perf_counter()
                loaded = await loop.run_in_executor(
                    executor, lambda: SpeechModels.load(cpu_threads=settings.model_cpu_threads)
                )
                await loop.run_in_executor(executor, warm_up, loaded)
                log.info("local_agent.models_loaded", seconds=round(time.perf_counter() - started, 2))
            matcher = await loop.run_in_executor(executor, _matcher_for, loaded, table)

            async def run_blocking(fn: Any, *args: Any) -> Any:
                return await loop.run_in_executor(executor, lambda: fn(*args))

            engine: ReplyEngine
            if settings.llm is not None:
                import aiohttp

                from .llm import LlmEngine

                http = aiohttp.ClientSession()
                engine = LlmEngine(settings.llm, http, split=split_sentences)
            else:
                engine = IntentEngine(table, matcher, run_blocking)
            slot.runtime = AgentRuntime(
                settings,
                loaded,
                engine,
                executor,
                api_key=api_key,
                token_secret=token_secret,
                split_sentences=split_sentences,
                store=store,
            )
            purger = loop.create_task(_purge_expired(slot.runtime), name="local_agent_purge")
            log.info(
                "local_agent.started",
                engine=engine.name,
                intents=len(table.intents),
                threads=settings.threads,
                resume_window_s=settings.resume_window_s,
            )
            yield
        finally:
            if purger is not None:
                purger.cancel()
            if slot.runtime is not None:
                await slot.runtime.close_all()
                slot.runtime = None
            if http is not None:
                await http.close()
            executor.shutdown(wait=False, cancel_futures=True)
            stores.clear()
            await store.close()
            if scratch is not None:
                scratch.cleanup()

    async def on_shutdown(app: web.Application) -> None:
        if slot.runtime is not None:
            await slot.runtime.close_all()

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        if slot.runtime is None:
            raise web.HTTPServiceUnavailable(text="local agent not started")
        return await handle_websocket(slot.runtime, request)

    async def token_handler(request: web.Request) -> web.Response:
        # As live (docs/reference/local-agent-api.md#auth): FastAPI-shaped 422 for a missing header or parameter, 404
        # for a wrong key.
        try:
            cred, expires, max_session = proto.validate_token_request(
                request.headers.get("Authorization"), request.query
            )
        except proto.TokenRequestInvalid as e:
            return web.json_response({"detail": e.detail}, status=422)
        if not hmac.compare_digest(cred.encode(), api_key.encode()):
            return web.json_response({"detail": "Invalid API key"}, status=404)
        token = proto.mint_token(token_secret, now=time.time(), expires_in_s=expires, max_session_s=max_session)
        return web.json_response({"token": token, "expires_in_seconds": expires})

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v1/ws", ws_handler)
    app.router.add_get("/v1/token", token_handler)
    add_store_routes(app, started_store, api_key=api_key, secret=token_secret, voices=settings.voices)
    return app


async def _purge_expired(runtime: AgentRuntime) -> None:
    """End the sessions whose resume window ran out, so their records do not stay ``active`` until the next
    connection."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(max(1.0, min(5.0, runtime.settings.resume_window_s / 2)))
        runtime.purge_expired(loop.time())


def run_standalone(host: str, port: int, settings: LocalAgentSettings) -> None:
    """Serve the local agent on ``host:port`` until interrupted. Prints the API key when it was generated."""
    generated = settings.api_key is None
    if generated:
        settings = replace(settings, api_key=secrets.token_urlsafe(24))
    app = create_local_agent_app(settings)
    print(f"Local Voice Agent API on ws://{host}:{port}/v1/ws  (tokens: http://{host}:{port}/v1/token)", flush=True)
    if generated:
        # Printed once, on purpose: it is the only way to learn a generated key. Never logged.
        print(f"API key (generated for this run): {settings.api_key}", flush=True)
    web.run_app(app, host=host, port=port, print=None)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m gateway.local_agent.app",
        description="Run the offline Voice Agent API server (the gateway's embedded local agent) on its own.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", help="key clients must present (default: $LOCAL_AGENT_API_KEY, else generated)")
    p.add_argument("--intents", type=Path, help="intents TOML (default: config/local_agent/intents.toml)")
    p.add_argument("--resume-window", type=float, help="seconds a dropped session can be resumed (default 30)")
    p.add_argument("--min-silence-ms", type=int, help="default end-of-turn silence (default 600)")
    p.add_argument("--backchannel-ms", type=int, help="speech over a reply this long interrupts whatever its words")
    p.add_argument("--threads", type=int, help="worker pool size for model calls (default 4)")
    p.add_argument(
        "--data-dir", type=Path, help="stored agents and sessions (default: $XDG_DATA_HOME/voice-gateway/local-agent)"
    )
    p.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--llm-model", help="model name for --llm-base-url")
    p.add_argument("--llm-api-key-env", help="environment variable holding the endpoint's API key")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = LocalAgentSettings(api_key=args.api_key)
    changes: dict[str, Any] = {}
    if args.intents is not None:
        changes["intents_path"] = args.intents
    if args.resume_window is not None:
        changes["resume_window_s"] = args.resume_window
    if args.min_silence_ms is not None:
        changes["min_silence_ms"] = args.min_silence_ms
    if args.backchannel_ms is not None:
        changes["backchannel_max_ms"] = args.backchannel_ms
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.data_dir is not None:
        changes["data_dir"] = args.data_dir
    if args.llm_base_url:
        if not args.llm_model:
            print("--llm-model is required with --llm-base-url", file=sys.stderr)
            return 2
        changes["llm"] = LlmSettings(args.llm_base_url, args.llm_model, args.llm_api_key_env)
    # The environment's secrets last, so the LLM key is read for an endpoint given by flags too.
    settings = settings_from_env(replace(settings, **changes))
    run_standalone(args.host, args.port, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
