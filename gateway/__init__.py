"""Telephony gateway for voice agents: carrier media streams in, Voice Agent API sessions out."""

__version__ = "0.1.0"
