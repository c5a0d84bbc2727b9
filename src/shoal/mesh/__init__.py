"""Peers: identity and certificates, membership, transport, anti-entropy replication and scopes."""
