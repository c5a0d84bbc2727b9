"""The image store: imports (docker save, OCI layout), layers, and registry pulls.

Test images are built here from busybox-static's ``/bin/busybox``. Pulls run against
Debian's ``docker-registry`` on a loopback port. With ``CI=true`` a missing tool fails
these tests instead of skipping them (``scripts/bootstrap-debian.sh`` installs them).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from shoal.node.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    DigestMismatch,
    ImageStore,
    Reference,
    host_platform,
    layer_tar,
    sha256_digest,
)
from shoal.node.registry_client import (
    ImagePuller,
    PullError,
    RegistryClient,
    default_pull_policy,
)
from tests.conftest import free_port

BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "echo", "cat", "sleep", "ls", "id", "env", "pwd", "hostname", "tty", "touch",
           "true", "false", "test", "kill", "ps", "wc"]


def require(tool: str, package: str) -> str:
    """The tool's path; without it, skip, except under CI=true, where this must fail."""
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/bin/{tool}") if os.access(p, os.X_OK)), None)
    if path is None:
        msg = f"{tool} is missing: install the Debian package {package} (scripts/bootstrap-debian.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF asks for a dynamic loader (a PT_INTERP header)."""
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    return any(int.from_bytes(elf[phoff + i * size:phoff + i * size + 4], "little") == 3
               for i in range(count))


def busybox_bytes() -> bytes:
    require("busybox", "busybox-static")
    data = BUSYBOX.read_bytes()
    if _has_interpreter(data):
        pytest.fail(f"{BUSYBOX} is dynamically linked: install busybox-static, not busybox")
    return data


def busybox_layer() -> bytes:
    files: list[tuple[str, bytes | str, int]] = [("bin/busybox", busybox_bytes(), 0o755)]
    files += [(f"bin/{a}", "busybox", 0o777) for a in APPLETS]
    files += [("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
               0o644), ("tmp/.keep", b"", 0o644)]
    return layer_tar(files)


def image_config(layers_uncompressed: list[bytes], cmd: list[str] | None = None,
                 env: list[str] | None = None) -> bytes:
    os_, arch = host_platform()
    return orjson.dumps({
        "os": os_, "architecture": arch,
        "config": {"Cmd": cmd or ["sh"], "Env": env or ["PATH=/bin", "FROM_IMAGE=yes"],
                   "WorkingDir": "/tmp"},
        "rootfs": {"type": "layers",
                   "diff_ids": [sha256_digest(x) for x in layers_uncompressed]},
    })


class Built:
    """An OCI image in memory: blobs by digest, and the manifest's digest."""

    def __init__(self, layers: list[bytes], gzip_layers: bool = False,
                 cmd: list[str] | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.config = image_config(layers, cmd)
        self.config_digest = self._add(self.config)
        descs = []
        for raw in layers:
            data = gzip.compress(raw, mtime=0) if gzip_layers else raw
            descs.append({"mediaType": OCI_LAYER_GZIP if gzip_layers else OCI_LAYER,
                          "digest": self._add(data), "size": len(data)})
        self.layer_digests = [str(d["digest"]) for d in descs]
        self.manifest = orjson.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.config_digest,
                       "size": len(self.config)},
            "layers": descs})
        self.digest = self._add(self.manifest)

    def _add(self, data: bytes) -> str:
        d = sha256_digest(data)
        self.blobs[d] = data
        return d


def write_oci_layout(root: Path, img: Built, name: str, with_index: bool = True) -> None:
    """An OCI layout; with_index wraps the manifest in an index with a foreign platform too."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    for d, data in img.blobs.items():
        (root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
    os_, arch = host_platform()
    top: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": img.digest,
                           "size": len(img.manifest)}
    if with_index:
        other = "arm64" if arch == "amd64" else "amd64"
        inner = orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**top, "platform": {"os": "linux", "architecture": other},
             "digest": "sha256:" + "0" * 64},  # absent, as in a single-platform save
            {**top, "platform": {"os": os_, "architecture": arch}}]})
        d = sha256_digest(inner)
        (root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(inner)
        top = {"mediaType": OCI_INDEX, "digest": d, "size": len(inner)}
    top["annotations"] = {REF_NAME: name}
    (root / "index.json").write_bytes(orjson.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}))


def write_docker_save(path: Path, layers: list[bytes], tag: str) -> None:
    """A ``docker save`` archive: manifest.json, <id>.json, <layer>/layer.tar."""
    config = image_config(layers)
    cid = sha256_digest(config).split(":")[1]
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        names = []
        for i, layer in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            add(names[-1], layer)
        add(f"{cid}.json", config)
        add("manifest.json", orjson.dumps(
            [{"Config": f"{cid}.json", "RepoTags": [tag], "Layers": names}]))
        add("repositories", b"{}")


def tar_dir(src: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)


# -- references and blobs -------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("me/app", "docker.io/me/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("127.0.0.1:5000/a/b@sha256:" + "a" * 64, "127.0.0.1:5000/a/b@sha256:" + "a" * 64),
    ("ghcr.io/o/r:t", "ghcr.io/o/r:t"),
])
def test_a_reference_is_normalised_as_docker_does(text: str, want: str) -> None:
    assert str(Reference.parse(text)) == want


def test_latest_or_no_tag_pulls_always_and_other_tags_if_not_present() -> None:
    assert default_pull_policy("busybox") == "Always"
    assert default_pull_policy("busybox:latest") == "Always"
    assert default_pull_policy("busybox:1.36") == "IfNotPresent"
    assert default_pull_policy("busybox@sha256:" + "a" * 64) == "IfNotPresent"


def test_a_blob_that_does_not_match_its_digest_is_not_stored(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    wrong = sha256_digest(b"other")
    with pytest.raises(DigestMismatch):
        store.put_blob(b"data", wrong)
    assert not store.has_blob(wrong)
    assert list(store.tmp_dir.iterdir()) == []
    assert store.read_blob(store.put_blob(b"data")) == b"data"


# -- imports --------------------------------------------------------------------------


def test_a_docker_save_archive_imports_and_unpacks_to_a_runnable_rootfs(tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], "shoal.test/busybox:v1")
    store = ImageStore(tmp_path / "data")
    t0 = time.monotonic()
    refs = store.import_archive(archive)
    imported = time.monotonic() - t0
    assert refs == ["shoal.test/busybox:v1"]
    digest = store.resolve("shoal.test/busybox:v1")
    assert digest is not None
    t0 = time.monotonic()
    rootfs = store.rootfs(digest)
    unpacked = time.monotonic() - t0
    assert store.rootfs(digest) == rootfs  # once per image
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    out = subprocess.run([str(rootfs / "bin" / "busybox"), "echo", "ran"], capture_output=True,
                         check=True).stdout
    assert out == b"ran\n"
    assert store.config(digest).env == ["PATH=/bin", "FROM_IMAGE=yes"]
    print(f"\nFIGURE docker-save import {imported * 1000:.0f} ms, "
          f"unpack {unpacked * 1000:.0f} ms ({len(BUSYBOX.read_bytes()) >> 10} KiB busybox)")


def _layers_with_whiteouts() -> list[bytes]:
    """A base layer, then one that deletes, makes a dir opaque, and tries to escape via a link."""
    base = layer_tar([("etc/keep", b"k", 0o644), ("etc/gone", b"g", 0o644),
                      ("opaque/old", b"o", 0o644), ("escape", "/", 0o777)])
    top = layer_tar([("etc/.wh.gone", b"", 0o644), ("opaque/new", b"n", 0o644),
                     ("opaque/.wh..wh..opq", b"", 0o644)])
    # No entry for "escape/" itself (that would replace the link): a file under the link.
    buf = io.BytesIO(top)
    with tarfile.open(fileobj=buf, mode="a") as tar:
        info = tarfile.TarInfo("escape/tmp/written-through-link")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return [busybox_layer(), base, buf.getvalue()]


@pytest.mark.parametrize("as_tar", [False, True], ids=["directory", "tar"])
def test_an_oci_layout_imports_with_gzip_layers_whiteouts_and_opaque_dirs(
        tmp_path: Path, as_tar: bool) -> None:
    img = Built(_layers_with_whiteouts(), gzip_layers=True)
    layout = tmp_path / "layout"
    write_oci_layout(layout, img, "localhost:5000/busybox:oci")
    src = layout
    if as_tar:
        src = tmp_path / "layout.tar"
        tar_dir(layout, src)
    store = ImageStore(tmp_path / "data")
    assert store.import_archive(src) == ["localhost:5000/busybox:oci"]
    digest = store.resolve("localhost:5000/busybox:oci")
    assert digest is not None
    rootfs = store.rootfs(digest)
    assert (rootfs / "etc" / "keep").read_bytes() == b"k"
    assert not (rootfs / "etc" / "gone").exists()
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["new"]
    # The absolute link resolved inside the rootfs, not on the host.
    assert (rootfs / "tmp" / "written-through-link").read_bytes() == b"x"
    assert not Path("/tmp/written-through-link").exists()


def test_an_import_by_the_cli_is_seen_by_a_running_store(tmp_path: Path) -> None:
    running = ImageStore(tmp_path / "data")
    assert running.resolve("shoal.test/cli:v1") is None
    archive = tmp_path / "img.tar"
    write_docker_save(archive, [busybox_layer()], "shoal.test/cli:v1")
    out = subprocess.run([sys.executable, "-m", "shoal.cli", "image", "import", "--data-dir",
                          str(tmp_path / "data"), str(archive)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "shoal.test/cli:v1" in out.stdout
    assert running.resolve("shoal.test/cli:v1") is not None


# -- registry pulls -------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a loopback port; yields host:port."""
    exe = require("docker-registry", "docker-registry")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=open(root / "log", "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start: {(root / 'log').read_text()}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def push(registry: str, repo: str, tag: str, img: Built) -> None:
    """The distribution API's push: a monolithic POST-then-PUT per blob, then the manifest."""
    base = f"http://{registry}/v2/{repo}"
    for digest, data in img.blobs.items():
        if digest == img.digest:
            continue
        req = urllib.request.Request(f"{base}/blobs/uploads/", method="POST", data=b"")
        with urllib.request.urlopen(req) as r:
            location = r.headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT", data=data,
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 201
    req = urllib.request.Request(f"{base}/manifests/{tag}", method="PUT", data=img.manifest,
                                 headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201


class CountingRegistry(RegistryClient):
    def __init__(self) -> None:
        super().__init__()
        self.manifests = 0
        self.blobs = 0

    async def get_manifest(self, ref: Reference, reference: str | None = None
                           ) -> tuple[str, str, bytes]:
        self.manifests += 1
        return await super().get_manifest(ref, reference)

    async def fetch_blob(self, ref: Reference, blob: Descriptor, store: ImageStore) -> bool:
        self.blobs += 1
        return await super().fetch_blob(ref, blob, store)


async def test_a_pull_from_a_loopback_registry_honours_the_pull_policy(
        tmp_path: Path, registry: str) -> None:
    img = Built([busybox_layer()], gzip_layers=True)
    push(registry, "shoal/busybox", "latest", img)
    push(registry, "shoal/busybox", "v1", img)
    client = CountingRegistry()
    puller = ImagePuller(ImageStore(tmp_path), client)
    try:
        with pytest.raises(PullError) as e:
            await puller.ensure(f"{registry}/shoal/busybox:v1", "Never")
        assert e.value.reason == "ErrImageNeverPull"
        t0 = time.monotonic()
        digest = await puller.ensure(f"{registry}/shoal/busybox:v1")
        pulled = time.monotonic() - t0
        assert digest == img.digest
        assert (client.manifests, client.blobs) == (1, 2)
        assert await puller.ensure(f"{registry}/shoal/busybox:v1") == digest  # IfNotPresent
        assert await puller.ensure(f"{registry}/shoal/busybox:v1", "Never") == digest
        assert client.manifests == 1
        assert await puller.ensure(f"{registry}/shoal/busybox") == digest  # :latest: Always
        assert await puller.ensure(f"{registry}/shoal/busybox") == digest
        assert (client.manifests, client.blobs) == (3, 2)  # re-resolved; blobs already here
        with pytest.raises(PullError) as e:
            await puller.ensure(f"{registry}/shoal/nothing:v1")
        assert e.value.reason == "ErrImagePull"
        print(f"\nFIGURE registry pull {pulled * 1000:.0f} ms "
              f"({sum(len(b) for b in img.blobs.values()) >> 10} KiB, loopback)")
    finally:
        await client.close()


class PeerStoreSource:
    """What a peer source does, minus the network: serve blobs from another node's store."""

    name = "peer"

    def __init__(self, peer: ImageStore) -> None:
        self.peer = peer
        self.served: list[str] = []

    async def fetch_blob(self, ref: Reference, blob: Descriptor, store: ImageStore) -> bool:
        if not self.peer.has_blob(blob.digest):
            return False
        with open(self.peer.blob_path(blob.digest), "rb") as f:
            store.put_stream(f, blob.digest)
        self.served.append(blob.digest)
        return True


async def test_blobs_a_peer_holds_come_from_the_peer_and_only_the_manifest_from_the_registry(
        tmp_path: Path, registry: str) -> None:
    img = Built([busybox_layer()], gzip_layers=True, cmd=["sh", "-c", "echo peer"])
    push(registry, "shoal/peer", "v1", img)
    first = ImagePuller(ImageStore(tmp_path / "a"))
    client = CountingRegistry()
    peer = PeerStoreSource(first.store)
    second = ImagePuller(ImageStore(tmp_path / "b"), client, peers=[peer])
    try:
        await first.ensure(f"{registry}/shoal/peer:v1")
        assert await second.ensure(f"{registry}/shoal/peer:v1") == img.digest
        assert (client.manifests, client.blobs) == (1, 0)
        assert sorted(peer.served) == sorted([img.config_digest, *img.layer_digests])
    finally:
        await first.registry.close()
        await client.close()


async def test_a_registry_that_wants_a_bearer_token_gets_one(tmp_path: Path,
                                                             registry: str) -> None:
    """A token server and a proxy that demands its token, in front of the real registry."""
    img = Built([busybox_layer()], gzip_layers=True, cmd=["true"])
    push(registry, "shoal/private", "v1", img)
    seen_scopes: list[str] = []

    async def token(request: web.Request) -> web.Response:
        seen_scopes.append(request.query.get("scope", ""))
        return web.json_response({"token": "s3cret"})

    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.Response(status=401, headers={"WWW-Authenticate": (
                f'Bearer realm="http://{request.host}/token",service="test",'
                'scope="repository:shoal/private:pull"')})
        async with aiohttp.ClientSession() as s, s.get(
                f"http://{registry}{request.path_qs}",
                headers={"Accept": request.headers.get("Accept", "*/*")}) as r:
            body = await r.read()
            return web.Response(status=r.status, body=body, headers={
                k: v for k, v in r.headers.items()
                if k in ("Content-Type", "Docker-Content-Digest")})

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    puller = ImagePuller(ImageStore(tmp_path))
    try:
        assert await puller.ensure(f"127.0.0.1:{port}/shoal/private:v1") == img.digest
        assert seen_scopes == ["repository:shoal/private:pull"]  # one token, reused
    finally:
        await puller.registry.close()
        await runner.cleanup()
        await asyncio.sleep(0)


# -- peer-to-peer (shoal.node.peer_images; the two-node test is in tests/test_runc_e2e.py) ---


class _Loopback:
    """The control channel between in-process peers: address -> their control handler."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.requests = 0

    async def request_control(self, address: str, payload: bytes, timeout: float) -> bytes:
        from shoal.mesh.tls_transport import PeerIdentity

        self.requests += 1
        return bytes(await self.handlers[address](PeerIdentity("me:1", "me"), payload))


async def test_blobs_and_manifests_come_from_a_peer_in_chunks_and_other_requests_pass_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.mesh.tls_transport import PeerIdentity
    from shoal.node import peer_images
    from shoal.node.peer_images import PeerBlobSource, PeerImageService

    monkeypatch.setattr(peer_images, "CHUNK", 256 << 10)  # several chunks per layer
    img = Built([busybox_layer()])
    holder = ImageStore(tmp_path / "holder")
    for d, data in img.blobs.items():
        holder.put_blob(data, d)
    holder.tag("127.0.0.1:9/shoal/p2p:v1", img.digest)

    async def join_service(peer: PeerIdentity, raw: bytes) -> bytes:
        return b'{"passed": true}'

    net = _Loopback()
    handler = PeerImageService(holder).chain(join_service)
    net.handlers = {"b:1": handler, "c:1": PeerImageService(ImageStore(tmp_path / "c")).chain(None)}
    source = PeerBlobSource(net, lambda: {"b": "b:1", "c": "c:1"})
    # The registry is unreachable (port 9): the manifest comes from the peer that has it.
    puller = ImagePuller(ImageStore(tmp_path / "fetcher"))
    puller.add_peers(source)
    try:
        assert await puller.ensure("127.0.0.1:9/shoal/p2p:v1", "IfNotPresent") == img.digest
    finally:
        await puller.registry.close()
    assert puller.store.missing_blobs(img.digest) == []
    assert source.fetched_from == {"b": 2}  # config and layer; c was asked and had nothing
    assert await handler(PeerIdentity("x:1", "x"), b'{"op": "renew"}') == b'{"passed": true}'
    # A client with no node certificate (a joining one) gets no image data.
    refused = await handler(PeerIdentity("x:1", None), orjson.dumps(
        {"op": "image.blob", "digest": img.layer_digests[0]}))
    assert b"node certificate" in refused and len(refused) < 200
