"""The application data plane: the site's nats-server, configured from the replica and the
membership, and JetStream streams from their objects (docs/dataplane.md)."""

from __future__ import annotations

import sys


def import_nats() -> None:
    """Import nats-py, which a module must call before its own ``import nats``.

    nats-py imports aiohttp (~10 MB) only for its WebSocket transport; Shoal speaks
    ``nats://`` only, so nats-py is first imported with aiohttp hidden (it then leaves
    that transport out), and a node loads aiohttp only if an HTTP client needs it.
    Nothing imports nats-py before a node has a bus or a device to publish for (1.4 MB of
    RSS on a node without ``nats-server``): ``shoal.bus.streams`` calls this as it is
    imported, the device mappers as they first connect."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails
    try:
        import nats.aio.transport  # noqa: F401
    except ImportError:
        pass  # no nats-py: the bus is not used
    finally:
        del sys.modules["aiohttp"]
