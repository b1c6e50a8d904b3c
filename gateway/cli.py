"""Command line: ``python -m gateway serve | local-agent`` (also installed as ``voice-gateway``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import structlog

from . import eventloop
from .config import load_settings
from .errors import ConfigError
from .logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voice-gateway", description="Telephony gateway for voice agents.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway (embedded local agent unless an agent is configured)")
    s.add_argument("--host", help="listen address (default from config: 0.0.0.0)")
    s.add_argument("--port", type=int, help="listen port (default from config: 8080)")
    s.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG or config/gateway.toml)")
    s.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes sharing the port via SO_REUSEPORT (default 1; docs/how-to/operations/workers.md)",
    )
    s.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop (default from config server.loop: auto = uvloop when installed)",
    )
    s.add_argument(
        "--metrics-port",
        type=int,
        help="each worker i also serves /metrics on this port + i (default with --workers > 1: port + 1)",
    )
    a = sub.add_parser("local-agent", help="run the offline Voice Agent API server alone (/v1/ws, /v1/token)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8090)
    a.add_argument("--api-key", help="key clients must present (default: $LOCAL_AGENT_API_KEY, else generated)")
    a.add_argument("--config", help="TOML config file for the [local_agent] section")
    from .simulator.cli import add_parser as add_call_parser  # issue #4: the call simulator

    add_call_parser(sub)
    return p


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "call":  # a client of a gateway: needs no gateway settings
        from .simulator.cli import run as run_call

        return run_call(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"voice-gateway: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    log = structlog.get_logger("gateway")
    if args.command == "serve":
        server = settings.server
        server = dataclasses.replace(
            server,
            host=args.host or server.host,
            port=args.port if args.port is not None else server.port,
            loop=args.loop or server.loop,
        )
        settings = dataclasses.replace(settings, server=server)
        try:
            loop = eventloop.resolve_loop(server.loop)
            if args.workers > 1 and settings.state.shared:  # each worker would bind the one internal port
                raise ConfigError("state.redis_url: a shared store needs one process per replica; not --workers")
        except ConfigError as exc:
            print(f"voice-gateway: invalid configuration: {exc}", file=sys.stderr)
            return 2
        log.info(
            "gateway.starting",
            host=server.host,
            port=server.port,
            agent="local" if settings.use_local_agent else settings.agent_url(),
            public_url=server.public_url or None,
            webhook_signatures=bool(settings.secrets.twilio_auth_token),
            workers=args.workers,
            loop=loop,
            agent_transport=settings.agent.transport,
        )
        if settings.secrets.token_secret_generated:
            log.warning(
                "gateway.token_secret_generated",
                detail="set GATEWAY_TOKEN_SECRET so every replica can verify call tokens minted by the others",
            )
        metrics_port = args.metrics_port
        if args.workers > 1 or metrics_port is not None:
            from .workers import run_worker, serve_workers

            if metrics_port is None:
                metrics_port = server.port + 1
            if args.workers == 1:
                run_worker(settings, 0, metrics_port, settings.log_format)
                return 0
            return serve_workers(settings, args.workers, metrics_port, settings.log_format)
        from .app import create_app

        app = create_app(settings)
        # Our own run loop instead of web.run_app: SIGTERM drains live calls (gateway.drain), then exits 0.
        from .drain import serve

        try:
            eventloop.run(serve(app, server.host, server.port), server.loop)
        except ConfigError as exc:  # found at start-up, e.g. a profile's agent_id the embedded local agent lacks
            print(f"voice-gateway: invalid configuration: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "local-agent":
        from .local_agent.bridge import run_local_agent

        run_local_agent(settings, host=args.host, port=args.port, api_key=args.api_key)
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
