"""Peer-to-peer images: a node fetches blobs (and manifests) from peers that hold them.

A site with one uplink then pulls each image from the registry once; every other
node gets the layers from a neighbour over the peer link. The requests ride on the
mesh's mutual-TLS control channel, so only nodes with a cluster certificate are
answered. Each request is a JSON object, and each answer a JSON header line followed
by raw bytes::

    {"op": "image.blob", "digest": "sha256:...", "offset": N, "length": L}
        -> {"size": S}\\n<bytes offset..offset+L>      or {"missing": true}\\n
    {"op": "image.manifest", "ref": "reg/repo:tag" or "sha256:..."}
        -> {"digest": D, "mediaType": M}\\n<manifest>  or {"missing": true}\\n

Blobs go in chunks well under the transport's frame limit, and are verified by
digest as they are written (``ImageStore.writer``), so a peer is trusted no more than
a registry. Peers are tried in rendezvous-hash order of the digest, so the nodes of a
site ask the same peer first for the same blob. A tag is resolved by the registry
when it answers; a peer's answer for a tag is used only when the registry cannot be
reached (see ``ImagePuller``), which is what lets a site whose uplink is down start an
image a neighbour already has.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from shoal.mesh.messages import State
from shoal.mesh.tls_transport import ControlHandler, PeerIdentity, TlsTransport
from shoal.mesh.transport import TransportError
from shoal.node.images import (
    Descriptor,
    ImageError,
    ImageStore,
    Reference,
    check_digest,
    media_type_of,
    sha256_digest,
)
from shoal.node.runtime import Runtime

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes per answer: a quarter of the transport's frame limit
TIMEOUT = 30.0  # seconds per request
MAX_PEERS = 8  # peers asked for one blob before giving up on peers
OP_BLOB, OP_MANIFEST = "image.blob", "image.manifest"


class ControlTransport(Protocol):
    async def request_control(self, address: str, payload: bytes, timeout: float) -> bytes: ...


def _answer(header: dict[str, Any], data: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + data


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, data = raw.partition(b"\n")
    doc = json.loads(head)
    if not isinstance(doc, dict):
        raise ValueError("the answer's header is not an object")
    return doc, data


def _read_range(path: Path, offset: int, length: int) -> tuple[int, bytes]:
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(offset)
        return size, f.read(length)


class PeerImageService:
    """Answers peers' image requests from this node's store."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.served_bytes = 0

    def chain(self, fallback: ControlHandler | None) -> ControlHandler:
        """A control handler that answers image requests and passes the rest on."""

        async def handle(peer: PeerIdentity, raw: bytes) -> bytes:
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = None
            op = msg.get("op") if isinstance(msg, dict) else None
            if isinstance(op, str) and op.startswith("image."):
                assert isinstance(msg, dict)
                return await self.handle(peer, op, msg)
            if fallback is None:
                return json.dumps({"error": f"unknown control request {op!r}"}).encode()
            return await fallback(peer, raw)

        return handle

    async def handle(self, peer: PeerIdentity, op: str, msg: dict[str, Any]) -> bytes:
        if peer.name is None:  # a joining client has no certificate yet: not one of us
            return _answer({"error": "image requests need a node certificate"})
        try:
            if op == OP_BLOB:
                digest = str(msg.get("digest", ""))
                check_digest(digest)
                if not self.store.has_blob(digest):
                    return _answer({"missing": True})
                offset = max(int(msg.get("offset", 0)), 0)
                length = min(max(int(msg.get("length", CHUNK)), 0), CHUNK)
                size, data = await asyncio.to_thread(
                    _read_range, self.store.blob_path(digest), offset, length)
                self.served_bytes += len(data)
                return _answer({"size": size}, data)
            if op == OP_MANIFEST:
                want = str(msg.get("ref", ""))
                found = want if want.startswith("sha256:") else self.store.resolve(want)
                if found is None or not self.store.has_blob(found):
                    return _answer({"missing": True})
                body = self.store.read_blob(found)
                return _answer({"digest": found, "mediaType": media_type_of(body)}, body)
        except (ImageError, OSError, ValueError, TypeError) as e:
            return _answer({"error": str(e)})
        return _answer({"error": f"unknown image request {op!r}"})


def rendezvous(key: str, names: Iterable[str]) -> list[str]:
    """Names ordered by highest random weight for ``key``: the same order on every node."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{key}\0{n}".encode()).digest(),
                  reverse=True)


class PeerBlobSource:
    """A ``BlobSource`` and ``ManifestSource`` backed by the live peers (see the docstring)."""

    name = "peers"

    def __init__(self, transport: ControlTransport,
                 peers: Callable[[], dict[str, str]], timeout: float = TIMEOUT) -> None:
        self.transport = transport
        self.peers = peers  # node name -> peer address, this node excluded
        self.timeout = timeout
        self.fetched_bytes = 0
        self.fetched_from: dict[str, int] = {}  # peer name -> blobs fetched from it

    def _order(self, key: str) -> list[tuple[str, str]]:
        peers = self.peers()
        return [(n, peers[n]) for n in rendezvous(key, peers)][:MAX_PEERS]

    async def _ask(self, address: str, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        raw = await self.transport.request_control(address, json.dumps(msg).encode(),
                                                   self.timeout)
        head, data = _split(raw)
        if "error" in head:
            raise TransportError(str(head["error"]))
        return head, data

    async def fetch_blob(self, ref: Reference, blob: Descriptor, store: ImageStore) -> bool:
        for name, address in self._order(blob.digest):
            w = store.writer(blob.digest)
            try:
                offset = 0
                while True:
                    head, data = await self._ask(address, {
                        "op": OP_BLOB, "digest": blob.digest, "offset": offset,
                        "length": CHUNK})
                    if head.get("missing"):
                        break
                    w.write(data)
                    offset += len(data)
                    if offset >= int(head.get("size", 0)) or not data:
                        w.commit()  # raises DigestMismatch if the peer sent other bytes
                        self.fetched_bytes += offset
                        self.fetched_from[name] = self.fetched_from.get(name, 0) + 1
                        log.info("blob %s (%d bytes) for %s from peer %s", blob.digest[:19],
                                 offset, ref, name)
                        return True
            except (TransportError, ValueError, ImageError) as e:
                log.info("peer %s could not give blob %s: %s", name, blob.digest[:19], e)
            finally:
                w.abort()  # a no-op after a commit
        return False

    async def find_manifest(self, ref: Reference, reference: str | None = None
                            ) -> tuple[str, str, bytes] | None:
        """(digest, media type, body) from the first peer that has it, verified by digest."""
        want = reference or (ref.digest if ref.digest else str(ref))
        for name, address in self._order(want):
            try:
                head, body = await self._ask(address, {"op": OP_MANIFEST, "ref": want})
            except (TransportError, ValueError) as e:
                log.info("peer %s could not give manifest %s: %s", name, want, e)
                continue
            if head.get("missing"):
                continue
            digest = sha256_digest(body)
            if digest != head.get("digest") or (want.startswith("sha256:") and digest != want):
                log.warning("peer %s sent a manifest for %s that does not verify", name, want)
                continue
            log.info("manifest %s (%s) from peer %s", want, digest[:19], name)
            return digest, str(head.get("mediaType") or media_type_of(body)), body
        return None


def attach(runtime: Runtime, transport: TlsTransport, members: Callable[[], Iterable[Any]],
           own_name: str) -> PeerBlobSource | None:
    """Serve this node's images to peers and fetch from them, when the runtime runs images.

    ``members`` gives the mesh's members (``MeshPeer.members``); the live ones other than
    this node are asked. The transport has one control handler (joins and renewals):
    image requests are answered here and everything else goes on to it.
    """
    store = getattr(runtime, "store", None)
    add = getattr(runtime, "add_peer_source", None)
    if not runtime.images or not isinstance(store, ImageStore) or add is None:
        return None
    # Wrap the handler installed before ours (the join service).
    transport.set_control_handler(PeerImageService(store).chain(transport.control_handler))

    def peers() -> dict[str, str]:
        return {m.name: m.address for m in members()
                if m.name != own_name and m.state == State.ALIVE}

    source = PeerBlobSource(transport, peers)
    add(source)
    return source
