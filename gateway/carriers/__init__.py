"""The carriers: one pure module per carrier (its stream dialect, answer document, signature check, settings table
and :class:`~gateway.carriers.spec.CarrierSpec`), listed in :mod:`gateway.carriers.registry`. Each dialect turns the
carrier's wire messages into the shared events of :mod:`gateway.carriers.events` and builds its outbound messages;
the call session never sees a carrier's JSON. Adding a carrier: docs/how-to/carriers/adding-a-carrier.md."""
