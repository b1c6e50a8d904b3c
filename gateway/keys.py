"""Every piece of typed state the gateway app holds (``app[KEY]``), declared once (aiohttp's ``web.AppKey``).

Who sets each key: :func:`gateway.app.create_app` the settings-derived state (:data:`SETTINGS`, :data:`CALLS`,
:data:`METRICS`, the HTTP client sessions, :data:`LOCAL_AGENT_KEY`); each HTTP area's ``setup(app)`` its own
(:data:`PARKED`: :mod:`gateway.call_control_http`; :data:`CLUSTER`: :mod:`gateway.cluster.control`;
:data:`SOFTPHONE`: :mod:`gateway.softphone`; :data:`AUDIOSOCKET`: :mod:`gateway.audiosocket_server`). Everyone else
only reads them, through this module, so nothing needs to import the app module back.

This module imports nothing of the gateway at run time (the value types are for type checkers only), so any module
can import it without an import cycle (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from .audiosocket_server import AudioSocketServer
    from .call_registry import CallRegistry
    from .cluster.node import Cluster
    from .config import Settings
    from .metrics import GatewayMetrics
    from .reattach import ParkedAgents
    from .records.service import Records
    from .softphone import SoftphoneState
    from .warm_transfer_http import WarmDialer

__all__ = [
    "AGENT_HTTP",
    "AUDIOSOCKET",
    "CALLS",
    "CLUSTER",
    "HTTP",
    "LOCAL_AGENT_KEY",
    "METRICS",
    "PARKED",
    "RECORDS",
    "SETTINGS",
    "SOFTPHONE",
    "WARM",
]

#: The validated settings the app was built with.
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
#: Live calls, admission, and the hooks that watch them (:mod:`gateway.call_registry`).
CALLS: web.AppKey[CallRegistry] = web.AppKey("calls")
#: This process's Prometheus metrics (:mod:`gateway.metrics`).
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics")
#: The shared HTTP client (HTTP tools, Twilio's REST API).
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http")
#: The client session every agent socket is opened on (``agent.transport = "aiohttp"``).
AGENT_HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("agent_http")
#: The key calls present to the embedded local agent (only with no agent configured).
LOCAL_AGENT_KEY: web.AppKey[str] = web.AppKey("local_agent_key")
#: Agent sessions parked for re-attach (:mod:`gateway.reattach`), set by :mod:`gateway.call_control_http`.
PARKED: web.AppKey[ParkedAgents] = web.AppKey("parked_agents")
#: The browser softphone's state, set by :mod:`gateway.softphone` when it is served.
SOFTPHONE: web.AppKey[SoftphoneState] = web.AppKey("softphone")
#: Call records, recordings and the webhook outbox (:mod:`gateway.records`), set by its ``setup`` when kept.
RECORDS: web.AppKey[Records] = web.AppKey("records")
#: Warm transfers in flight (:mod:`gateway.warm_transfer_http`, which sets it).
WARM: web.AppKey[WarmDialer] = web.AppKey("warm_transfers")
#: This replica in the cluster: the shared state store, its live calls, forwarding (:mod:`gateway.cluster`).
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
#: Asterisk AudioSocket's listener and issued UUIDs, set by :mod:`gateway.audiosocket_server` when its door is open.
AUDIOSOCKET: web.AppKey[AudioSocketServer] = web.AppKey("audiosocket")
