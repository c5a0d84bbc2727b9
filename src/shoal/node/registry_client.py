"""Pulling images: the OCI distribution API, blob sources, and ``imagePullPolicy``.

A pull resolves the reference to a manifest at the registry (the one place that
knows what a tag means now), then fetches each blob the store lacks from the first
``BlobSource`` that holds it. Blobs are content-addressed and verified on write, so
any source is as good as any other: the registry is one source, and a peer that
already holds the blob is another. A site with one slow uplink then pulls each
layer once and its nodes share it.

Peer-to-peer (``shoal.node.peer_images``): a ``PeerSource`` asks peers (in
rendezvous-hash order of the digest) for blobs over the mesh's mutual-TLS control
channel, and answers the same requests from its own ``ImageStore``. It is added with
``ImagePuller.add_peers`` ahead of the registry. When the registry cannot be reached,
manifests come from peers too: by digest (verified), or for a tag, whatever a peer
holds under it; so a site whose uplink is down still starts an image a neighbour has.

Registries on loopback addresses are spoken to over http, all others over https
(``insecure`` names more http registries). Anonymous pulls and Bearer tokens
(``WWW-Authenticate: Bearer realm=...,service=...,scope=...``) are supported, with
optional username/password for the token endpoint or Basic auth.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import re
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shoal.node.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DigestMismatch,
    ImageError,
    ImageStore,
    Manifest,
    Reference,
    media_type_of,
    select_platform,
    sha256_digest,
)

if TYPE_CHECKING:
    import aiohttp


def network_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What a failed fetch raises. aiohttp is imported by the first pull (a node that never
    pulls from a registry never loads it), so its errors can only come once it is loaded."""
    client = sys.modules.get("aiohttp")
    return (TimeoutError, OSError, *more) if client is None else (
        client.ClientError, TimeoutError, OSError, *more)


log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
DOCKER_HUB = "registry-1.docker.io"  # docker.io's API host
MAX_MANIFEST = 4 << 20  # as containerd: a manifest larger than this is refused
CHUNK = 1 << 16

ALWAYS, IF_NOT_PRESENT, NEVER = "Always", "IfNotPresent", "Never"


class PullError(ImageError):
    """The image could not be pulled; ``reason`` is the kubelet's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def default_pull_policy(image: str) -> str:
    """Kubernetes' default: Always for ``:latest`` or no tag, else IfNotPresent."""
    ref = Reference.parse(image)
    if ref.digest:
        return IF_NOT_PRESENT
    return ALWAYS if ref.tag == "latest" else IF_NOT_PRESENT


class BlobSource(Protocol):
    """Somewhere blobs can come from: the registry, or (later) peers that hold them."""

    name: str

    async def fetch_blob(self, ref: Reference, blob: Descriptor, store: ImageStore) -> bool:
        """Write ``blob`` into ``store`` (verified by digest); False if this source lacks it.

        Raises on a transfer that failed partway or a blob that does not verify.
        """


class PeerSource(BlobSource, Protocol):
    """Blobs, and manifests, from the cluster's peers (shoal.node.peer_images)."""

    async def find_manifest(self, ref: Reference, reference: str | None = None
                            ) -> tuple[str, str, bytes] | None:
        """(digest, media type, body) from a peer that has it (verified against
        ``reference`` when that is a digest); None if no peer has it."""


@dataclass
class Credentials:
    username: str
    password: str


@dataclass
class _Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> _Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return _Challenge(scheme.lower(), params)


def _is_loopback(host: str) -> bool:
    name = urllib.parse.urlsplit("//" + host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """The OCI distribution API, pull side. One instance serves every registry."""

    name = "registry"

    def __init__(self, credentials: dict[str, Credentials] | None = None,
                 insecure: Sequence[str] = (), timeout: float = 300.0) -> None:
        self.credentials = credentials or {}
        self.insecure = set(insecure)
        self.timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}  # (registry, scope) -> Authorization
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10))
        return self._session

    def base_url(self, registry: str) -> str:
        host = DOCKER_HUB if registry == "docker.io" else registry
        scheme = "http" if registry in self.insecure or _is_loopback(host) else "https"
        return f"{scheme}://{host}"

    async def _get(self, ref: Reference, path: str, accept: str = "") -> aiohttp.ClientResponse:
        """GET with auth: anonymous first, then whatever the 401's challenge asks for."""
        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:pull"
        headers = {"Accept": accept} if accept else {}
        auth = self._tokens.get((ref.registry, scope))
        for _ in range(2):
            h = {**headers, "Authorization": auth} if auth else headers
            resp = await self._sess().get(url, headers=h)
            if resp.status != 401:
                return resp
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            resp.release()
            auth = await self._authorize(ref.registry, challenge, scope)
            self._tokens[(ref.registry, scope)] = auth
        raise PullError("ErrImagePull", f"{url}: unauthorized")

    async def _authorize(self, registry: str, ch: _Challenge, scope: str) -> str:
        creds = self.credentials.get(registry)
        basic = ""
        if creds is not None:
            basic = "Basic " + base64.b64encode(
                f"{creds.username}:{creds.password}".encode()).decode()
        if ch.scheme == "basic":
            if not basic:
                raise PullError("ErrImagePull", f"{registry} wants credentials")
            return basic
        if ch.scheme != "bearer" or "realm" not in ch.params:
            raise PullError("ErrImagePull", f"{registry}: unsupported auth {ch.scheme!r}")
        params = {"scope": ch.params.get("scope", scope)}
        if "service" in ch.params:
            params["service"] = ch.params["service"]
        headers = {"Authorization": basic} if basic else {}
        async with self._sess().get(ch.params["realm"], params=params, headers=headers) as r:
            if r.status != 200:
                raise PullError("ErrImagePull", f"token from {ch.params['realm']}: "
                                f"HTTP {r.status}")
            doc = await r.json(content_type=None)
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise PullError("ErrImagePull", f"{ch.params['realm']} returned no token")
        return f"Bearer {token}"

    async def get_manifest(self, ref: Reference, reference: str | None = None
                           ) -> tuple[str, str, bytes]:
        """(digest, media type, body) of a manifest or index, verified if asked by digest."""
        want = reference or ref.ref
        resp = await self._get(ref, f"manifests/{want}", MANIFEST_ACCEPT)
        async with resp:
            if resp.status == 404:
                raise PullError("ErrImagePull", f"{ref}: manifest unknown")
            if resp.status != 200:
                raise PullError("ErrImagePull", f"{ref}: manifest: HTTP {resp.status}")
            if (resp.content_length or 0) > MAX_MANIFEST:
                raise PullError("ErrImagePull", f"{ref}: manifest too large")
            body = await resp.content.read(MAX_MANIFEST + 1)
            ctype = resp.headers.get("Content-Type", "")
        if len(body) > MAX_MANIFEST:
            raise PullError("ErrImagePull", f"{ref}: manifest too large")
        digest = sha256_digest(body)
        if want.startswith("sha256:") and digest != want:
            raise DigestMismatch(f"{ref}: manifest hashes to {digest}, not {want}")
        return digest, media_type_of(body, ctype), body

    async def fetch_blob(self, ref: Reference, blob: Descriptor, store: ImageStore) -> bool:
        resp = await self._get(ref, f"blobs/{blob.digest}")
        async with resp:
            if resp.status == 404:
                return False
            if resp.status != 200:
                raise PullError("ErrImagePull", f"{ref}: blob {blob.digest}: HTTP {resp.status}")
            w = store.writer(blob.digest)
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    w.write(chunk)
                w.commit()
            except BaseException:
                w.abort()
                raise
        return True


class ImagePuller:
    """Makes images present in the store as ``imagePullPolicy`` says."""

    def __init__(self, store: ImageStore, registry: RegistryClient | None = None,
                 peers: Sequence[BlobSource] = ()) -> None:
        self.store = store
        self.registry = registry or RegistryClient()
        self.sources: list[BlobSource] = [*peers, self.registry]
        self.manifest_peers: list[PeerSource] = []
        self._inflight: dict[str, asyncio.Future[str]] = {}
        self.last_pull_seconds: float | None = None

    def add_peers(self, source: PeerSource) -> None:
        """Blobs from ``source`` before the registry; manifests from it when the registry
        cannot be reached (a tag is then what a peer has under it)."""
        self.sources.insert(0, source)
        self.manifest_peers.append(source)

    async def _manifest(self, ref: Reference, reference: str | None = None
                        ) -> tuple[str, str, bytes]:
        try:
            return await self.registry.get_manifest(ref, reference)
        except network_errors() as e:
            for peers in self.manifest_peers:
                found = await peers.find_manifest(ref, reference)
                if found is not None:
                    log.info("registry for %s unreachable (%s); manifest from %s", ref, e,
                             peers.name)
                    return found
            raise

    def present(self, image: str, policy: str | None = None) -> str | None:
        """The image's manifest digest if the policy lets the local copy be used as it is."""
        local = self.store.resolve(image)
        if local is None or (policy or default_pull_policy(image)) == ALWAYS \
                or self.store.missing_blobs(local):
            return None
        return local

    async def ensure(self, image: str, policy: str | None = None) -> str:
        """The image's manifest digest, pulling it first if the policy says so."""
        policy = policy or default_pull_policy(image)
        if (present := self.present(image, policy)) is not None:
            return present
        local = self.store.resolve(image)
        if policy == NEVER:
            raise PullError("ErrImageNeverPull", f'Container image "{image}" is not present '
                            "with pull policy of Never")
        try:
            return await self.pull(image)
        except network_errors() as e:
            if local is not None and not self.store.missing_blobs(local):
                # Always, but the registry is unreachable: an edge node keeps running what it has.
                log.warning("pull %s failed (%s); using the local copy", image, e)
                return local
            raise PullError("ErrImagePull", f"pull {image}: {e}") from e

    async def pull(self, image: str) -> str:
        """Pull once even if many containers ask at the same time."""
        key = str(Reference.parse(image))
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            digest = await self._pull(image)
            fut.set_result(digest)
            return digest
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved here, so a pull with no waiters does not warn
            raise
        finally:
            del self._inflight[key]

    async def _pull(self, image: str) -> str:
        started = time.monotonic()
        ref = Reference.parse(image)
        digest, mtype, body = await self._manifest(ref)
        self.store.put_blob(body, digest)
        manifest_body = body
        if mtype in INDEX_TYPES:
            want = select_platform(body)
            if not self.store.has_blob(want.digest):
                _, _, manifest_body = await self._manifest(ref, want.digest)
                self.store.put_blob(manifest_body, want.digest)
            else:
                manifest_body = self.store.read_blob(want.digest)
        manifest = Manifest.parse(manifest_body)
        for blob in (manifest.config, *manifest.layers):
            if not self.store.has_blob(blob.digest):
                await self._fetch(ref, blob)
        if ref.tag:
            self.store.tag(str(Reference(ref.registry, ref.repository, ref.tag)), digest)
        self.last_pull_seconds = time.monotonic() - started
        log.info("pulled %s (%s) in %.2fs", image, digest[:19], self.last_pull_seconds)
        return digest

    async def _fetch(self, ref: Reference, blob: Descriptor) -> None:
        errors: list[str] = []
        for src in self.sources:
            try:
                if await src.fetch_blob(ref, blob, self.store):
                    return
            except network_errors(ImageError) as e:
                errors.append(f"{src.name}: {e}")
                if src is self.registry:
                    raise
        raise PullError("ErrImagePull", f"{ref}: blob {blob.digest} not found "
                        f"({'; '.join(errors) or 'no source has it'})")
