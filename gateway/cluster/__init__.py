"""Many replicas behaving as one gateway (docs/architecture/scale-out.md): this replica's membership and live calls
(:mod:`gateway.cluster.node`), the forward credential (:mod:`gateway.cluster.forward`, pure), and call control from
any replica plus the internal listener (:mod:`gateway.cluster.control`)."""
