"""``python -m gateway call``: the call simulator's command line. Not pure (reads flags and the environment,
prints, writes files).

Exit codes: 0 the call ran (whoever hung up); 1 the gateway broke Twilio's protocol; 2 bad usage (flags, files,
a missing extra); 3 the call was refused or the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .caller import SimulatorConfig, load_caller_voice, simulate_call, turns_from_args, write_wav
from .carrier_side import CARRIER_SIDES, secret_env
from .errors import UsageError
from .sides.common import L16_BYTE_ORDERS, TELNYX_L16
from .timeline import build_timeline

__all__ = ["SECRET_ENV", "add_parser", "run"]

#: Where --auth-token comes from when not given, per carrier: its side's variable (gateway.simulator.carrier_side).
SECRET_ENV = {carrier: secret_env(carrier) for carrier in CARRIER_SIDES}


class _TurnAction(argparse.Action):
    """``--say`` and ``--wav`` append to one list, so turns keep their command-line order."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number of seconds, got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``call`` on the gateway's sub-command parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "call",
        help="simulate a phone call against a running gateway, as Twilio would place it",
        description=(
            "Place a simulated Twilio call: POST the voice webhook, open the <Stream>, speak the given turns in "
            "real time, play what the agent says through a model of Twilio's playout buffer (marks, clear), and "
            "print a timeline. If the TwiML's stream URL is on another host than a loopback --url, the stream is "
            "opened on --url instead (the upgrade is still signed over the TwiML's URL)."
        ),
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL (default %(default)s)")
    p.add_argument(
        "--api-key",
        default=None,
        help="the gateway's GATEWAY_API_KEY (default: that variable): after the call, print where its record and "
        "recording were stored",
    )
    p.add_argument(
        "--carrier",
        choices=tuple(CARRIER_SIDES),
        default="twilio",
        help="which carrier places the call, speaking its own webhook, answer document, stream dialect "
        "and audio format (default %(default)s)",
    )
    p.add_argument(
        "--l16-byte-order",
        choices=L16_BYTE_ORDERS,
        default="assumed",
        help="byte order of L16 audio the carrier sends and reads: 'assumed' is the simulator's own per-carrier "
        "assumption (docs/how-to/carriers/index.md#assumptions), 'big' or 'little' forces one, e.g. to see what a "
        "byte-order mistake sounds like (default %(default)s)",
    )
    p.add_argument(
        "--telnyx-codec",
        choices=tuple(TELNYX_L16),
        default=None,
        help="with --carrier telnyx: play a stream Call Control's streaming_start opened with this L16 codec "
        "instead of the TeXML answer's (TeXML cannot ask for L16)",
    )
    p.add_argument(
        "--say",
        action=_TurnAction,
        const="say",
        dest="turns",
        metavar="TEXT",
        help="a caller turn spoken by the local TTS (needs the 'speech' extra); repeatable",
    )
    p.add_argument(
        "--wav",
        action=_TurnAction,
        const="wav",
        dest="turns",
        metavar="FILE",
        help="a caller turn from a PCM WAV (any rate, mono or stereo); repeatable, mixes with --say",
    )
    p.add_argument("--out", metavar="FILE.wav", help="write what the caller heard (8 kHz PCM16 mono, true timing)")
    p.add_argument(
        "--barge-in-after",
        type=_seconds,
        metavar="SECONDS",
        help="start the next turn this long into each agent reply instead of waiting for its end",
    )
    p.add_argument(
        "--pause",
        type=_seconds,
        default=1.2,
        metavar="SECONDS",
        help="agent silence that ends a reply (and the greeting) before the caller speaks again (default %(default)s)",
    )
    p.add_argument(
        "--hangup-after",
        type=_seconds,
        metavar="SECONDS",
        help="hang up this long after the stream started, whatever is happening",
    )
    p.add_argument(
        "--stay-on-line",
        action="store_true",
        help="after the last turn (or with no turns: a silent caller) stay on the line saying nothing until the "
        "gateway hangs up (or --hangup-after)",
    )
    p.add_argument(
        "--greeting-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="speak the first turn after this long if no greeting plays (default %(default)s)",
    )
    p.add_argument(
        "--reply-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="move on if no reply starts within this long (default %(default)s)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the timeline as JSON (keys: docs/reference/cli.md#json-output)"
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw waveforms and events (needs the 'plot' extra)")
    p.add_argument(
        "--auth-token",
        default=None,
        help="sign the webhook (and upgrade) the carrier's way with this secret: Twilio auth token, "
        "SignalWire signing key, Telnyx Ed25519 private key (base64 seed), Plivo auth token, Vonage "
        "signature secret, Exotel user:password, AudioSocket's AUDIOSOCKET_SECRET (default: the carrier's "
        "variable, e.g. $TWILIO_AUTH_TOKEN)",
    )
    p.add_argument(
        "--public-url",
        default="",
        help="the gateway's GATEWAY_PUBLIC_URL, which it checks signatures against (default: --url)",
    )
    p.add_argument(
        "--audiosocket",
        default="",
        metavar="HOST:PORT",
        help="with --carrier audiosocket: the gateway's AudioSocket listener, as the dialplan names it "
        "(carriers.audiosocket.listen; default: --url's host, port 9092)",
    )
    p.add_argument("--from", dest="from_", default="+15550100001", help="caller number (default %(default)s)")
    p.add_argument("--to", default="+15550100002", help="called number; picks the profile (default %(default)s)")
    return p


def config_from_args(args: argparse.Namespace, turns: Sequence[Any]) -> SimulatorConfig:
    carrier = getattr(args, "carrier", "twilio")
    token = args.auth_token if args.auth_token is not None else os.environ.get(SECRET_ENV[carrier], "")
    return SimulatorConfig(
        url=args.url,
        carrier=carrier,
        l16_byte_order=getattr(args, "l16_byte_order", "assumed"),
        telnyx_codec=getattr(args, "telnyx_codec", None) or "",
        turns=tuple(turns),
        auth_token=token,
        public_url=args.public_url,
        from_=args.from_,
        to=args.to,
        pause_s=args.pause,
        barge_in_after_s=args.barge_in_after,
        hangup_after_s=args.hangup_after,
        stay_on_line=getattr(args, "stay_on_line", False),
        greeting_timeout_s=args.greeting_timeout,
        api_key=args.api_key if args.api_key is not None else os.environ.get("GATEWAY_API_KEY", ""),
        reply_timeout_s=args.reply_timeout,
        audiosocket=getattr(args, "audiosocket", ""),
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``call`` command; returns the exit code."""
    try:
        if args.plot:
            from .plot import require_matplotlib

            require_matplotlib()  # fail before dialling, not after a 30 s call
        turns = turns_from_args(args.turns or [], load_caller_voice)
        config = config_from_args(args, turns)
        if not args.json:
            print(f"calling {config.url} with {len(turns)} caller turn(s)...", file=sys.stderr)
        record = asyncio.run(simulate_call(config))
        if args.out:
            write_wav(args.out, record.heard)
            record.out_wav = args.out
        timeline = build_timeline(record)
        if args.plot:
            from .plot import render_plot

            render_plot(timeline, args.plot)
    except UsageError as exc:
        print(f"voice-gateway call: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # --out / --plot not writable
        print(f"voice-gateway call: {exc}", file=sys.stderr)
        return UsageError.exit_code
    if args.json:
        print(json.dumps(timeline.to_dict(), indent=2))
    else:
        print(timeline.format_text())
    return timeline.exit_code
