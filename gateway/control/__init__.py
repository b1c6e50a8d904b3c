"""The carriers' REST APIs for call control (docs/how-to/call-control.md#carriers): one module per carrier that has
one. Not pure: each client is a thin async shell over aiohttp around pure request shapes and error parsing, which sit
above the client class in the same module. The carrier dialects (:mod:`gateway.carriers`) stay pure; which client a
call gets is decided by :mod:`gateway.call.shell.carrier_control`.

- :mod:`.twilio`: Twilio's Calls resource (hang up, redirect, create); SignalWire's LaML API is the same API at a
  Space URL, so it is served by the same client.
- :mod:`.telnyx`: Telnyx Call Control commands (``actions/hangup``, ``actions/transfer``, ``actions/send_dtmf``).
- :mod:`.plivo`: Plivo's Call resource (``DELETE`` to hang up, transfer by URL, ``DTMF``).
- :mod:`.dial`: the ``<Dial>`` documents a transfer by URL points at (Plivo, SignalWire), served by the gateway.
- :mod:`.http`: what the JSON clients share (one request, its timeout, its failures).
"""
