"""``shoal snapshot save FILE`` and ``shoal snapshot restore FILE``: a node's replica and keys.

A snapshot is a gzipped tar, mode 0600 (it holds the node's private keys): a
manifest (``snapshot.json``), a consistent copy of ``state.db`` made with SQLite's
online backup (safe while the node runs: WAL readers do not block its writer), and
the ``pki`` and ``wireguard`` directories. Images, pods' files and the bus's state are
not in it; they come back from registries, peers and the replica.

Restoring needs the node stopped (its data dir's lock is taken, so a running node is
refused). What was there moves to ``DATA_DIR/before-restore``. In a leaderless cluster
the restored node comes back with an older replica and catches up from its peers; what
it alone acknowledged after the snapshot, and no peer pulled, is lost. Its local
revision jumps ahead by ``REVISION_JUMP`` so that its peers' pull cursors, which may be
past the snapshot's revision, never point into revisions it hands out again. A snapshot
older than the mesh's fence lifetime (7 days) could bring back objects whose deletion
the cluster has since forgotten, so it is refused unless forced.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal import __version__
from shoal.cli.data_dir_lock import DataDirInUse, DataDirLock
from shoal.mesh import config as mesh_config
from shoal.store.system_crypto import CryptoError, load_pem_certificate

if TYPE_CHECKING:
    # tarfile is imported by the commands that use it: ``shoal server`` imports this module
    # to build its parser, and a running node need not hold tarfile (0.6 MB of RSS).
    import tarfile

FORMAT = 1
MANIFEST = "snapshot.json"
STATE_DB = "state.db"
KEY_DIRS = ("pki", "wireguard")
REVISION_JUMP = 1 << 32
"""More revisions than a node hands out between a snapshot and its restore (a week at
7,000 writes a second), so the restored node's revisions stay past its peers' cursors."""
MAX_AGE = mesh_config.default().fence_ttl
DEFAULT_DATA_DIR = Path("/var/lib/shoal")


class SnapshotError(Exception):
    pass


def add_parser(sub: Any) -> None:
    s = sub.add_parser("snapshot", help="save or restore a node's replica and keys",
                       description="save: a consistent copy of a node's replica and keys, "
                                   "while it runs. restore: put one back, with the node "
                                   "stopped; it then catches up from its peers.")
    ssub = s.add_subparsers(dest="snapshot_command", required=True)
    for name, help_ in (("save", "write a snapshot of the node to FILE (mode 0600)"),
                        ("restore", "restore the node from FILE (the node must be stopped)")):
        c = ssub.add_parser(name, help=help_, description=help_)
        c.add_argument("file", type=Path, metavar="FILE")
        c.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"the node's data dir (default: {DEFAULT_DATA_DIR})")
        if name == "restore":
            c.add_argument("--force", action="store_true",
                           help="restore a snapshot older than 7 days (deleted objects may "
                                "come back)")


def _meta_revision(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
    top = db.execute("SELECT MAX(rv) FROM objects").fetchone()
    return max(int(row[0]) if row else 0, int(top[0] or 0))


def _node_name(data_dir: Path) -> str:
    try:
        cert = load_pem_certificate((data_dir / "pki" / "node.crt").read_bytes())
    except (OSError, CryptoError):
        return ""
    return cert.common_name.removeprefix("system:node:")


def save(data_dir: Path, out: Path) -> dict[str, Any]:
    import tarfile  # here, not at the top: see the TYPE_CHECKING import

    db_path = data_dir / STATE_DB
    if not db_path.exists():
        raise SnapshotError(f"{data_dir} holds no replica ({STATE_DB})")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".shoal-snapshot-", dir=out.parent) as tmp:
        copy = Path(tmp) / STATE_DB
        src = sqlite3.connect(db_path, timeout=30)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)  # one step: a single read transaction, so one consistent state
            revision = _meta_revision(dst)
            objects = int(dst.execute("SELECT COUNT(*) FROM objects").fetchone()[0])
        finally:
            dst.close()
            src.close()
        manifest = {"format": FORMAT, "node": _node_name(data_dir), "revision": revision,
                    "objects": objects, "shoal": __version__,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(
                        timespec="seconds")}
        partial = out.with_name(out.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
                body = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(body))
                tar.add(copy, STATE_DB)
                for name in KEY_DIRS:
                    if (data_dir / name).is_dir():
                        tar.add(data_dir / name, name)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    manifest["bytes"] = out.stat().st_size
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.extractfile(MANIFEST)
        manifest = json.loads(member.read()) if member is not None else None
    except (KeyError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError("not a shoal snapshot (no snapshot.json of format 1)")
    return manifest


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        top = m.name.split("/", 1)[0]
        if m.name == MANIFEST:
            continue
        if (m.name != STATE_DB and top not in KEY_DIRS) or ".." in m.name.split("/") \
                or m.name.startswith("/") or not (m.isfile() or m.isdir()):
            raise SnapshotError(f"unexpected entry {m.name!r} in the snapshot")
        members.append(m)
    return members


def restore(data_dir: Path, snapshot: Path, force: bool = False) -> dict[str, Any]:
    import tarfile  # here, not at the top: see the TYPE_CHECKING import

    try:
        tar = tarfile.open(snapshot, "r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise SnapshotError(f"cannot read {snapshot}: {e}") from None
    with tar:
        manifest = _read_manifest(tar)
        members = _safe_members(tar)
        created = datetime.datetime.fromisoformat(str(manifest["created"]))
        age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
        if age > MAX_AGE and not force:
            raise SnapshotError(
                f"the snapshot is {age / 86400:.1f} days old: the cluster may have forgotten "
                "deletions made since, which it would bring back. Rejoin with a fresh "
                "--data-dir instead, or pass --force")
        existed = data_dir.exists()
        try:
            lock = DataDirLock.acquire(data_dir)
        except DataDirInUse as e:
            raise SnapshotError(f"refusing to restore while the node runs: {e}") from None
        try:
            return _restore_locked(data_dir, tar, members, manifest)
        except BaseException:
            if not existed:
                lock.release()
                shutil.rmtree(data_dir, ignore_errors=True)
            raise
        finally:
            lock.release()


def _restore_locked(data_dir: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo],
                    manifest: dict[str, Any]) -> dict[str, Any]:
    staging = data_dir / "restore.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    tar.extractall(staging, members=members, filter="data")
    old_revision = 0
    if (data_dir / STATE_DB).exists():
        with contextlib.closing(sqlite3.connect(data_dir / STATE_DB, timeout=30)) as old, \
                contextlib.suppress(sqlite3.Error):
            old_revision = _meta_revision(old)
    with contextlib.closing(sqlite3.connect(staging / STATE_DB)) as db:
        revision = max(_meta_revision(db), old_revision) + REVISION_JUMP
        with db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)",
                       (str(revision),))
    # What was there goes aside (an operator's undo), then the snapshot moves in.
    aside = data_dir / "before-restore"
    present = [n for n in (STATE_DB, f"{STATE_DB}-wal", f"{STATE_DB}-shm", *KEY_DIRS)
               if (data_dir / n).exists()]
    if present:
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(mode=0o700)
    for name in present:
        os.rename(data_dir / name, aside / name)
    for path in staging.iterdir():
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        os.rename(path, data_dir / path.name)
    staging.rmdir()
    return {**manifest, "restored_revision": revision, "aside": str(aside) if present else None}


def run(args: argparse.Namespace) -> int:
    import tarfile  # here, not at the top: see the TYPE_CHECKING import

    try:
        if args.snapshot_command == "save":
            m = save(args.data_dir, args.file)
            print(f"saved node {m['node'] or '?'} at revision {m['revision']} "
                  f"({m['objects']} objects, {m['bytes']} bytes) to {args.file} in "
                  f"{m['seconds']} s")
            return 0
        m = restore(args.data_dir, args.file, args.force)
    except (SnapshotError, OSError, sqlite3.Error, tarfile.TarError) as e:
        print(f"shoal snapshot {args.snapshot_command}: {e}", file=sys.stderr)
        return 1
    aside = f"; what was there is in {m['aside']}" if m["aside"] else ""
    print(f"restored node {m['node'] or '?'} from {args.file} (taken {m['created']}, "
          f"revision {m['revision']}, {m['objects']} objects){aside}. Start it with --name "
          f"{m['node'] or 'NAME'}: it catches up from its peers, and writes only it had "
          "acknowledged after the snapshot are lost.")
    return 0
