"""The document CRDT: hybrid logical clocks, stamped documents and their deterministic merge."""
