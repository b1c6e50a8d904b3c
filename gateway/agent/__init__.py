"""Client side of the Voice Agent API (AssemblyAI's speech-in/speech-out WebSocket protocol)."""
