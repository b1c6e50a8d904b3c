"""The simulated carrier sides, one module per carrier as in :mod:`gateway.carriers` (:mod:`.common` holds what
they share). :mod:`gateway.simulator.carrier_side` lists them and is what the caller imports."""
