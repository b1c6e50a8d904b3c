"""Call records: what the gateway keeps after a call (docs/how-to/call-records.md).

- :mod:`~gateway.records.settings` (pure): the ``[storage]`` and ``[webhooks]`` tables and their start-up checks;
- :mod:`~gateway.records.mixer` (pure): the two-channel recording's one sample clock (caller left, agent right as
  the caller heard it);
- :mod:`~gateway.records.wav` (file I/O only): a WAV file written incrementally, its header valid after every flush;
- :mod:`~gateway.records.recorder`: the per-call taps and the one writer thread that mixes and writes off the loop;
- :mod:`~gateway.records.record` (pure): the call record JSON document, built from the typed call events;
- :mod:`~gateway.records.signing` (pure): Standard Webhooks signatures;
- :mod:`~gateway.records.storage`: where records and recordings go (a directory, or S3-compatible storage);
- :mod:`~gateway.records.outbox`: the durable SQLite outbox of webhook deliveries and its sender;
- :mod:`~gateway.records.service`: the app-level wiring (subscribes to call events, ends each call's record);
- :mod:`~gateway.records.http`: ``GET /calls``, ``GET /calls/{call_sid}``, ``GET /calls/{call_sid}/recording``.

This module imports nothing, so :mod:`gateway.config` can import the settings without pulling in the rest.
"""
