"""The application data plane: the site's nats-server, configured from the replica and the
membership, and JetStream streams from their objects (docs/dataplane.md)."""
