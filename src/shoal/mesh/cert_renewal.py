"""Renewing a node's own certificates before they expire, with no restart.

``node.crt`` (the peer port) and ``server.crt`` (the API) are renewed once less than
a third of their lifetime is left: at start, then at each certificate's renewal
point. A signer signs them itself; a joined node asks a signer over its
authenticated peer connection (``renew`` signs only the caller's own name). The
key is kept, so the transport and the API server only load the new certificate
chain into their SSL contexts: new connections present it, open ones and the pods
carry on. A signer that cannot be reached is asked again after a minute, and a
warning is logged until the certificate expires.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from pathlib import Path

from shoal.mesh import join
from shoal.mesh.pki import NodePKI, read_certificate
from shoal.mesh.tls_transport import TlsTransport
from shoal.mesh.transport import TransportError
from shoal.store.system_crypto import Certificate

log = logging.getLogger("shoal.mesh.cert_renewal")

RENEW_WHEN_LEFT = 1 / 3
"""Renew once less than this fraction of a certificate's lifetime is left."""
RETRY_AFTER = 60.0
"""Seconds before asking again after a renewal failed."""
MAX_SLEEP = 3600.0
"""The longest wait between checks (a clock that jumps is noticed within the hour)."""
MIN_SLEEP = 1.0


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def renewal_point(cert: Certificate) -> datetime.datetime:
    """When a certificate is due: a third of its lifetime before it expires."""
    life = _utc(cert.not_after) - _utc(cert.not_before)
    return _utc(cert.not_after) - life * RENEW_WHEN_LEFT


def _load(path: Path) -> Certificate | None:
    return read_certificate(path)


def due(pki: NodePKI, now: datetime.datetime) -> tuple[bool, bool, datetime.datetime]:
    """(node.crt due, server.crt due, the next renewal point of the two)."""
    points = []
    flags = []
    for path in (join.node_cert_path(pki), pki.server_cert):
        cert = _load(path)
        point = renewal_point(cert) if cert is not None else now
        points.append(point)
        flags.append(point <= now)
    return flags[0], flags[1], min(points)


async def renew_due(pki: NodePKI, transport: TlsTransport, name: str, hosts: list[str],
                    reload: Callable[[], None], now: datetime.datetime | None = None) -> bool:
    """Renew whichever certificate is due and reload; True if one was renewed."""
    now = now or datetime.datetime.now(datetime.UTC)
    node, serving, _ = due(pki, now)
    if not (node or serving):
        return False
    await join.renew_certificates(pki, transport, name, hosts, node=node, serving=serving)
    reload()
    renewed = [f for f, d in (("node.crt", node), ("server.crt", serving)) if d]
    until = {f: _load(p) for f, p in (("node.crt", join.node_cert_path(pki)),
                                      ("server.crt", pki.server_cert))}
    log.info("renewed %s (now valid until %s)", " and ".join(renewed), ", ".join(
        f"{f} {_utc(c.not_after).isoformat(timespec='seconds')}"
        for f, c in until.items() if c is not None and f in renewed))
    return True


async def keep_renewed(pki: NodePKI, transport: TlsTransport, name: str, hosts: list[str],
                       reload: Callable[[], None]) -> None:
    """Renew at start and at each renewal point, for the node's lifetime."""
    while True:
        wait: float
        try:
            await renew_due(pki, transport, name, hosts, reload)
            _, _, point = due(pki, datetime.datetime.now(datetime.UTC))
            wait = (point - datetime.datetime.now(datetime.UTC)).total_seconds()
        except (join.JoinError, TransportError, OSError, ValueError) as e:
            expires = _load(join.node_cert_path(pki))
            log.warning("renewing this node's certificates failed (node.crt expires %s); "
                        "trying again in %.0fs: %s",
                        _utc(expires.not_after).isoformat(timespec="seconds")
                        if expires is not None else "?", RETRY_AFTER, e)
            wait = RETRY_AFTER
        await asyncio.sleep(min(MAX_SLEEP, max(MIN_SLEEP, wait)))
