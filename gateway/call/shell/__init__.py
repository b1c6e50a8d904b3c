"""The asyncio shell around the call's pure core (:mod:`gateway.call.core`): it reads the sockets, runs the timers
and executes the core's actions. Not pure. :class:`gateway.call.shell.session.CallSession` composes the parts:
stream acceptance (:mod:`.accept`), the carrier socket and its writer (:mod:`.carrier`), the agent link
(:mod:`.agent_link`) and the carrier's call control (:mod:`.carrier_control`)."""
