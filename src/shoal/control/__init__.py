"""The leaderless controllers: garbage collection, namespace lifecycle, and (later) the scheduler."""
