"""The local agent's stored agents and session history (``/v1/agents``, ``/v1/sessions`` with artifacts), kept in
its data directory (docs/reference/local-agent-api.md#stored-agents, #sessions, #data-directory).

Pure: :mod:`.agents` (what an agent may hold, and the session fields it stands for), :mod:`.timeline` (the event log
→ the timeline artifact), :mod:`.recording` (placing the caller's and the agent's audio in one stereo stream),
:mod:`.artifacts` (the artifact list and its signed links). The shell: :mod:`.db` (the SQLite file),
:mod:`.recorder` (one session's hooks and files), :mod:`.service` (the store's thread, records and recorders),
:mod:`.http` (the routes).

Nothing is imported here, so importing a pure module of the package loads no event loop.
"""
