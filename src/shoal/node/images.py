"""The local image store: content-addressed blobs, an index of references, unpacked rootfs.

Layout under ``DATA_DIR/images``::

    blobs/sha256/<hex>     every blob (manifests, configs, layers), verified on write
    index.json             {"refs": {"<normalised reference>": "sha256:<manifest digest>"}}
    rootfs/<config hex>/   an image's layers applied in order, once, shared by bundles

Every write goes to a temporary name and is renamed into place, and the index is
rewritten under an ``flock``. So ``shoal image import`` may run while the node
runs: the node re-reads ``index.json`` whenever its mtime changes, and never sees a
half-written blob, index or rootfs.

Images come in three ways: an OCI image layout (directory or tar), a ``docker save``
archive (turned into an OCI manifest over the same uncompressed layer tars), or a
registry pull (``registry_client``). Manifests are OCI or Docker schema 2; an image
index (or Docker manifest list) is resolved to the entry for this machine's platform
(linux/amd64 or linux/arm64).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import logging
import os
import platform
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, cast

import orjson

if TYPE_CHECKING:
    # tarfile is imported where an image is unpacked, imported or built: a running node
    # imports this module (pod_worker) and seldom does any of those (0.6 MB of RSS).
    import tarfile

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# OCI annotation that names an image inside an OCI layout's index.json.
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

DEFAULT_REGISTRY = "docker.io"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINKS = 40  # as the kernel's path walk, so a symlink loop in an image ends


class ImageError(Exception):
    """An image is malformed, missing or unsupported."""


class DigestMismatch(ImageError):
    """A blob's content does not hash to the digest it was fetched by."""


# -- references -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """``registry/repository:tag`` or ``registry/repository@digest``, normalised as docker does."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, digest = text, None
        if "@" in name:
            name, digest = name.split("@", 1)
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1:]
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repo = first, rest
        else:
            registry, repo = DEFAULT_REGISTRY, name
        if registry == DEFAULT_REGISTRY and "/" not in repo:
            repo = "library/" + repo
        if not repo or repo != repo.lower():
            raise ImageError(f"invalid image reference {text!r}")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repo, tag, digest)

    @property
    def ref(self) -> str:
        """What the registry's manifest endpoint takes: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def normalise(image: str) -> str:
    return str(Reference.parse(image))


# -- manifests and configs ----------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def of(cls, d: dict[str, Any]) -> Descriptor:
        digest = str(d.get("digest", ""))
        check_digest(digest)
        return cls(str(d.get("mediaType", "")), digest, int(d.get("size", 0)))


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: list[Descriptor]

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        doc = _json(data, "manifest")
        mt = doc.get("mediaType", OCI_MANIFEST)
        if mt not in MANIFEST_TYPES or "config" not in doc:
            raise ImageError(f"not an image manifest (mediaType {mt!r})")
        return cls(Descriptor.of(doc["config"]), [Descriptor.of(x) for x in doc.get("layers") or []])


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a runtime uses."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    os: str = "linux"
    architecture: str = ""

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        doc = _json(data, "image config")
        c = doc.get("config") or {}
        return cls(list(c.get("Entrypoint") or []), list(c.get("Cmd") or []),
                   list(c.get("Env") or []), str(c.get("WorkingDir") or ""),
                   str(c.get("User") or ""), str(doc.get("os") or "linux"),
                   str(doc.get("architecture") or ""))


def host_platform() -> tuple[str, str]:
    """(os, architecture) in OCI terms; images for other platforms are not run here."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    return "linux", arch.get(machine, machine)


def select_platform(index_data: bytes, want: tuple[str, str] | None = None) -> Descriptor:
    """The manifest an image index lists for ``want`` (this machine by default)."""
    os_, arch = want or host_platform()
    doc = _json(index_data, "image index")
    for m in doc.get("manifests") or []:
        p = m.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch:
            return Descriptor.of(m)
    raise ImageError(f"no manifest for {os_}/{arch} in the image index")


def media_type_of(data: bytes, header: str = "") -> str:
    """A manifest's media type, from the document or else the Content-Type it came with."""
    mt = _json(data, "manifest").get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if header:
        return header.split(";")[0].strip()
    return OCI_INDEX if "manifests" in _json(data, "manifest") else OCI_MANIFEST


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ImageError(f"{what} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


# -- digests ------------------------------------------------------------------------------


def check_digest(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; rejects anything else (it names a file)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported digest {digest!r} (sha256 only)")
    return hexpart


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the store ----------------------------------------------------------------------------


class BlobWriter:
    """A blob being written: hashed as it goes, renamed into place only if it verifies."""

    def __init__(self, store: ImageStore, expected: str | None) -> None:
        self.store = store
        self.expected = expected
        self._hash = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self.tmp = Path(name)
        self.f: IO[bytes] = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.f.write(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        self.f.close()
        digest = "sha256:" + self._hash.hexdigest()
        if self.expected is not None and digest != self.expected:
            self.tmp.unlink(missing_ok=True)
            raise DigestMismatch(f"blob should be {self.expected} but hashes to {digest}")
        self.tmp.replace(self.store.blob_path(digest))
        return digest

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class ImageStore:
    """See the module docstring."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.rootfs_dir = self.root / "rootfs"
        self.index_path = self.root / "index.json"
        for d in (self.blobs, self.tmp_dir, self.rootfs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._refs: dict[str, str] = {}
        self._index_mtime: tuple[int, int] | None = None

    # blobs

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is not in the store") from None

    def writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; with ``expected``, only if it hashes to it. Returns its digest."""
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise DigestMismatch(f"blob should be {expected} but hashes to {digest}")
        if not self.has_blob(digest):
            w = self.writer(digest)
            w.write(data)
            w.commit()
        return digest

    def put_stream(self, f: IO[bytes], expected: str | None = None) -> str:
        w = self.writer(expected)
        try:
            while chunk := f.read(1 << 20):
                w.write(chunk)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    # references

    def refs(self) -> dict[str, str]:
        """Normalised reference -> manifest digest, re-read when another process changed it."""
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return {}
        mtime = (st.st_ino, st.st_mtime_ns)  # a rewrite is a rename: a new inode
        if mtime != self._index_mtime:
            self._refs = dict(_json(self.index_path.read_bytes(), "image index").get("refs") or {})
            self._index_mtime = mtime
        return dict(self._refs)

    def resolve(self, image: str) -> str | None:
        """The manifest digest of ``image`` if it is here (a pinned digest needs only its blob)."""
        ref = Reference.parse(image)
        if ref.digest and self.has_blob(ref.digest):
            return ref.digest
        return self.refs().get(str(ref))

    def tag(self, image: str, manifest_digest: str) -> None:
        """Point ``image`` at a manifest: a read-modify-write of the index under a lock."""
        check_digest(manifest_digest)
        with open(self.root / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            refs: dict[str, Any] = {}
            if self.index_path.exists():
                refs = dict(_json(self.index_path.read_bytes(), "image index").get("refs") or {})
            refs[normalise(image)] = manifest_digest
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="index-")
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps({"refs": refs}, option=orjson.OPT_INDENT_2))
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, self.index_path)

    # images

    def manifest(self, manifest_digest: str) -> Manifest:
        """The image manifest at a digest; an index in the store resolves to this platform."""
        data = self.read_blob(manifest_digest)
        if media_type_of(data) in INDEX_TYPES:
            data = self.read_blob(select_platform(data).digest)
        return Manifest.parse(data)

    def config(self, manifest_digest: str) -> ImageConfig:
        return ImageConfig.parse(self.read_blob(self.manifest(manifest_digest).config.digest))

    def missing_blobs(self, manifest_digest: str) -> list[Descriptor]:
        m = self.manifest(manifest_digest)
        return [d for d in (m.config, *m.layers) if not self.has_blob(d.digest)]

    def rootfs(self, manifest_digest: str) -> Path:
        """The image unpacked (once; later calls return the same directory). Do not write to it."""
        m = self.manifest(manifest_digest)
        target = self.rootfs_dir / check_digest(m.config.digest)
        if target.exists():
            return target
        import tarfile  # here, not at the top: see the TYPE_CHECKING import

        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="rootfs-"))
        try:
            os.chmod(tmp, 0o755)
            for layer in m.layers:
                with self._open_layer(layer) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                    apply_layer(tar, tmp)
            try:
                tmp.rename(target)
            except OSError:
                if not target.exists():
                    raise
                shutil.rmtree(tmp)  # another process unpacked it first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("unpacked %s (%d layers) in %.2fs", m.config.digest[:19], len(m.layers),
                 time.monotonic() - started)
        return target

    @contextlib.contextmanager
    def _open_layer(self, layer: Descriptor) -> Iterator[IO[bytes]]:
        if "zstd" in layer.media_type:
            raise ImageError(f"layer {layer.digest}: zstd layers are not supported")
        with open(self.blob_path(layer.digest), "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            # Sniff rather than trust the media type: docker save layers are plain tars
            # whatever the manifest said they were compressed as.
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=raw) as gz:
                    yield cast(IO[bytes], gz)
            else:
                yield raw

    def images(self) -> list[tuple[str, str]]:
        return sorted(self.refs().items())

    # imports

    def import_archive(self, path: Path) -> list[str]:
        """Import an OCI layout or ``docker save`` archive (directory or tar); returns the refs."""
        if path.is_dir():
            return self._import_from(_DirSource(path))
        import tarfile  # here, not at the top: see the TYPE_CHECKING import

        with tarfile.open(path) as tar:
            return self._import_from(_TarSource(tar))

    def _import_from(self, src: _Source) -> list[str]:
        if src.exists("oci-layout") and src.exists("index.json"):
            return self._import_oci(src)
        if src.exists("manifest.json"):
            return self._import_docker(src)
        raise ImageError("neither an OCI layout (oci-layout, index.json) nor a docker save "
                         "archive (manifest.json)")

    def _import_oci(self, src: _Source) -> list[str]:
        index = _json(src.read("index.json"), "index.json")
        refs: list[str] = []
        for entry in index.get("manifests") or []:
            d = Descriptor.of(entry)
            self._copy_tree(src, d)
            notes = entry.get("annotations") or {}
            # docker save (25+) writes the full name in containerd's annotation, the tag in OCI's.
            name = notes.get(CONTAINERD_NAME) or notes.get(REF_NAME)
            if not name:
                continue
            # A bare tag ("v1") names nothing we could pull; keep it under its own name.
            image = name if ("/" in name or ":" in name or "@" in name) else f"{name}:latest"
            self.tag(image, d.digest)
            refs.append(normalise(image))
        if not refs:
            raise ImageError(f"index.json names no image ({REF_NAME} annotations)")
        return refs

    def _copy_tree(self, src: _Source, d: Descriptor) -> None:
        """Copy a manifest (or index) and everything it references from an OCI layout."""
        data = src.read(_blob_name(d.digest))
        self.put_blob(data, d.digest)
        mt = media_type_of(data, d.media_type)
        if mt in INDEX_TYPES:
            for m in _json(data, "index").get("manifests") or []:
                p = m.get("platform") or {}
                if p and (p.get("os"), p.get("architecture")) != host_platform():
                    continue  # other platforms' blobs are usually absent from a saved layout
                self._copy_tree(src, Descriptor.of(m))
            return
        manifest = Manifest.parse(data)
        for blob in (manifest.config, *manifest.layers):
            if not self.has_blob(blob.digest):
                with src.open(_blob_name(blob.digest)) as f:
                    self.put_stream(f, blob.digest)

    def _import_docker(self, src: _Source) -> list[str]:
        entries = orjson.loads(src.read("manifest.json"))
        refs: list[str] = []
        for e in entries:
            config_data = src.read(e["Config"])
            config_digest = self.put_blob(config_data)
            layers = []
            for name in e["Layers"]:
                with src.open(name) as f:
                    digest = self.put_stream(f)
                layers.append({"mediaType": OCI_LAYER, "digest": digest,
                               "size": self.blob_path(digest).stat().st_size})
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                   "size": len(config_data)},
                        "layers": layers}
            digest = self.put_blob(orjson.dumps(manifest))
            tags = e.get("RepoTags") or []
            for t in tags:
                self.tag(t, digest)
                refs.append(normalise(t))
            if not tags:
                refs.append(digest)  # untagged: runnable by digest only
        return refs


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{check_digest(digest)}"


# -- archive sources: the same import reads a directory or a tar ---------------------------


class _Source:
    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        p = (self.root / name).resolve()
        if not p.is_relative_to(self.root):
            raise ImageError(f"{name!r} leaves the archive")
        return p

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{name} is missing from the archive") from None


class _TarSource(_Source):
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

    def exists(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        m = self.members.get(name.removeprefix("./"))
        f = self.tar.extractfile(m) if m is not None else None
        if f is None:
            raise ImageError(f"{name} is missing from the archive")
        return f


# -- applying a layer -------------------------------------------------------------------


def secure_join(root: Path, rel: str, *, follow_last: bool = False) -> Path:
    """``root/rel`` with every symlink on the way resolved *inside* ``root``.

    A layer may hold ``bin -> /usr/bin`` and later ``bin/sh``: that must land in
    ``root/usr/bin/sh``, never in the host's ``/usr/bin``.
    """
    parts = [p for p in PurePosixPath(rel).parts if p not in ("/", ".", "")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ImageError(f"too many symlinks resolving {rel!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in PurePosixPath(target).parts if p not in ("/", ".", "")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def apply_layer(tar: tarfile.TarFile, root: Path) -> None:
    """Apply one layer's changes to ``root``: whiteouts delete, entries replace."""
    created: set[str] = set()  # paths this layer wrote: an opaque marker spares them
    deferred_dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for m in tar:
        name = str(PurePosixPath("/", m.name))  # normalised, absolute inside the image
        parent, base = os.path.split(name)
        if base == OPAQUE:
            d = secure_join(root, parent)
            if d.is_dir() and not d.is_symlink():
                for child in d.iterdir():
                    if os.path.join(parent, child.name) not in created:
                        _remove(child)
            continue
        if base.startswith(WHITEOUT):
            victim = secure_join(root, os.path.join(parent, base[len(WHITEOUT):]))
            if victim.is_symlink() or victim.exists():
                _remove(victim)
            continue
        if name == "/":
            continue
        created.add(name)
        dest = secure_join(root, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if m.isdir():
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                dest.unlink()
            dest.mkdir(exist_ok=True)
            deferred_dirs.append((dest, m))  # modes and times once their contents are in
            continue
        if dest.is_symlink() or dest.exists():
            if dest.is_dir() and not dest.is_symlink() and not m.isdir():
                shutil.rmtree(dest)
            else:
                dest.unlink()
        if m.isreg():
            f = tar.extractfile(m)
            assert f is not None
            with open(dest, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        elif m.issym():
            os.symlink(m.linkname, dest)
        elif m.islnk():
            source = secure_join(root, str(PurePosixPath("/", m.linkname)))
            os.link(source, dest)
            continue  # a hard link shares its target's metadata
        elif m.isfifo():
            os.mkfifo(dest)
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            try:
                os.mknod(dest, kind | 0o600, os.makedev(m.devmajor, m.devminor))
            except PermissionError:
                continue  # runc gives the container its /dev anyway
        else:
            continue
        _set_meta(dest, m)
    for dest, m in reversed(deferred_dirs):
        _set_meta(dest, m)


def _set_meta(path: Path, m: tarfile.TarInfo) -> None:
    with contextlib.suppress(OSError):
        os.lchown(path, m.uid, m.gid)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    with contextlib.suppress(OSError):
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


# -- building images (tests, and ``shoal image`` later) -----------------------------------


def layer_tar(files: Iterable[tuple[str, bytes | str, int]]) -> bytes:
    """An uncompressed layer: (path, content or ``->target`` symlink, mode) per entry."""
    import tarfile  # here, not at the top: see the TYPE_CHECKING import

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path, content, mode in files:
            parts = PurePosixPath(path).parts[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.mode = mode
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
