"""Reusable test tools: link emulation and network namespaces."""
