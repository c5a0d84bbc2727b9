"""Invariant checkers, one per module: each takes the final state and returns its violations."""
