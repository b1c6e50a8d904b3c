"""One phone call: a pure core (the call's logic, sans I/O) and the asyncio shell that runs it.

See :mod:`gateway.call.core` for the core and :mod:`gateway.call.session` for the shell.
"""
