"""The deterministic simulator: many real peers in one process on virtual time
(``loop.py``) and a seeded network that delays, drops, duplicates, reorders and
partitions (``network.py``); clusters with faults and a write workload
(``cluster.py``), runs (``scenarios.py``), invariant checkers (``checkers/``),
and the ``python -m shoal.sim`` command."""
