"""The node agent: pod lifecycle, runtimes, probes, logs and node status."""
