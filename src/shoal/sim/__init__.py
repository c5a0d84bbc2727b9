"""The deterministic simulator: many peers in one process on virtual time and a seeded network."""
