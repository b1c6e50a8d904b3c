"""One phone call: a pure core (the call's logic, sans I/O; :mod:`gateway.call.core`, mypy --strict) and the asyncio
shell that runs it (:mod:`gateway.call.shell`; :class:`gateway.call.shell.session.CallSession`)."""
