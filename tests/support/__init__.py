"""Helpers shared by the test suites (caller simulation, fixtures)."""
