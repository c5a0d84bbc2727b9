"""Kubernetes kinds, defaulting, validation, selectors and the merge keys of keyed lists."""
