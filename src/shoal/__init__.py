"""Shoal: a leaderless, Kubernetes-compatible orchestrator for the edge."""

__version__ = "0.1.0"
