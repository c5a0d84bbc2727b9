"""Peers: identity and certificates, membership and failure detection (SWIM with
Lifeguard), the transport interface, anti-entropy replication (push and cursor
pulls) and scopes. ``MeshPeer`` (``peer.py``) composes them over a ``Transport``;
every tunable lives in ``MeshConfig`` (``config.py``)."""
