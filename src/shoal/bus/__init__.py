"""The application data plane: the site's nats-server, configured from the replica and the
membership, and JetStream streams from their objects (docs/dataplane.md)."""

from __future__ import annotations

import sys


def _import_nats_without_aiohttp() -> None:
    """nats-py imports aiohttp (~10 MB) only for its WebSocket transport; Shoal speaks
    ``nats://`` only, so nats-py is first imported with aiohttp hidden (it then leaves
    that transport out), and a node loads aiohttp only if an HTTP client needs it."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails
    try:
        import nats.aio.transport  # noqa: F401
    except ImportError:
        pass  # no nats-py: the bus is not used
    finally:
        del sys.modules["aiohttp"]


_import_nats_without_aiohttp()
