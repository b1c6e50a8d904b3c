"""Command line: ``python -m gateway serve | local-agent`` (also installed as ``voice-gateway``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import structlog
from aiohttp import web

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
    a = sub.add_parser("local-agent", help="run the offline Voice Agent API server alone (/v1/ws, /v1/token)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8090)
    a.add_argument("--api-key", help="key clients must present (default: $LOCAL_AGENT_API_KEY, else generated)")
    a.add_argument("--config", help="TOML config file for the [local_agent] section")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
            server, host=args.host or server.host, port=args.port if args.port is not None else server.port
        )
        settings = dataclasses.replace(settings, server=server)
        from .app import create_app

        app = create_app(settings)
        log.info(
            "gateway.starting",
            host=server.host,
            port=server.port,
            agent="local" if settings.use_local_agent else settings.agent_url(),
            public_url=server.public_url or None,
            webhook_signatures=bool(settings.secrets.twilio_auth_token),
        )
        if settings.secrets.token_secret_generated:
            log.warning("gateway.token_secret_generated", detail="set GATEWAY_TOKEN_SECRET so every replica can "
                        "verify call tokens minted by the others")
        web.run_app(app, host=server.host, port=server.port, print=None,
                    shutdown_timeout=settings.server.drain_budget_s, access_log=None)
        return 0
    if args.command == "local-agent":
        from .local_agent.bridge import run_local_agent

        run_local_agent(settings, host=args.host, port=args.port, api_key=args.api_key)
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
