"""Carrier media-stream dialects. Each dialect is a pure module that turns the carrier's wire messages into the
shared events of :mod:`gateway.carriers.events` and builds its outbound messages; the call session never sees a
carrier's JSON. Adding a carrier means one dialect module plus one route."""
