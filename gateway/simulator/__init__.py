"""The call simulator: ``python -m gateway call`` places a phone call against a running gateway the way Twilio
does, from a laptop, with no phone and no Twilio account (issue #4). Tutorial:
docs/tutorials/try-without-a-phone.md.

Modules (pure cores, thin shell, as everywhere in the gateway):

- :mod:`.twilio_side` (pure): Twilio's half of the protocol: webhook form, TwiML reading, the messages it sends
  and accepts, and its FIFO playout buffer with mark echoes and ``clear``;
- :mod:`.turn_taking` (pure): when the simulated caller speaks, barges in and hangs up;
- :mod:`.timeline` (pure): what the call sounded like: turns, greeting, replies, latencies, clears, marks, as
  text, JSON and plot data;
- :mod:`.caller` (asyncio): the real HTTP + WebSocket leg that drives the above on a 20 ms clock;
- :mod:`.plot` (matplotlib, optional extra ``plot``): the PNG;
- :mod:`.cli`: the ``call`` subcommand;
- :mod:`.errors`: the exception tree and exit codes.
"""

from .caller import CallerTurn, SimulatorConfig, simulate_call
from .errors import CallRefused, GatewayProtocolError, SimulatorError, UsageError
from .timeline import CallRecord, Timeline, build_timeline

__all__ = [
    "CallRecord",
    "CallRefused",
    "CallerTurn",
    "GatewayProtocolError",
    "SimulatorConfig",
    "SimulatorError",
    "Timeline",
    "UsageError",
    "build_timeline",
    "simulate_call",
]
