"""Ports a node listens on: taken ones are refused with the flag that chose them."""

from __future__ import annotations

import errno
import socket


class PortInUse(Exception):
    """A port the node must listen on cannot be had; the message names the flag."""


def in_use(flag: str, host: str, port: int, error: OSError) -> PortInUse:
    """The error for ``error``, raised binding ``host``:``port`` chosen by ``flag``."""
    if error.errno == errno.EADDRINUSE:
        why = "address already in use (another shoal?)"
    elif error.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this host (see --bind)"
    elif error.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    else:
        why = error.strerror or str(error)
    return PortInUse(f"{flag} {port}: {why}")


def check_free(host: str, port: int, flag: str) -> None:
    """Raise PortInUse unless ``host``:``port`` can be listened on now (TCP, with the
    SO_REUSEADDR the servers use, so a port in TIME_WAIT counts as free)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as e:
            raise in_use(flag, host, port, e) from None
