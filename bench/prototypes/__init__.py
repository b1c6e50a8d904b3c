"""Bench-only stand-ins for one gateway module each (scripts/bench ``--prototype NAME``, its PROTOTYPES table)."""
