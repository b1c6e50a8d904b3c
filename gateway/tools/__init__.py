"""Agent tools executed by the gateway: a registry of built-in and HTTP tools, and the result timing rule."""
