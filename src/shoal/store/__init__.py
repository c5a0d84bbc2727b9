"""The local replica: SQLite persistence, the local revision (resourceVersion), the change feed and compaction."""
