"""Device twins and the built-in mappers that speak device protocols (docs/devices.md)."""
