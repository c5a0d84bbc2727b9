"""shoal snapshot: saved while the node runs, restored only while it is stopped."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from shoal.cli import snapshot
from shoal.cli.main import main
from shoal.store.replica import Replica
from tests.conftest import ShoalProcess, free_port

# Starts real `shoal server` processes: run one at a time (make test), not on xdist workers.
pytestmark = pytest.mark.slow


def shoal(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_a_snapshot_saved_while_running_restores_the_replica_and_keys(tmp_path: Path) -> None:
    node = ShoalProcess("snap", tmp_path / "data", free_port(), tmp_path / "snap.log")
    node.start(["--dns-port", "0", "--no-bus"])
    file = tmp_path / "snap.tar.gz"
    try:
        node.kubectl("create", "configmap", "before", "--from-literal=k=v")
        code, out, err = shoal("snapshot", "save", str(file), "--data-dir", str(node.data_dir))
        assert code == 0, err
        assert "saved node snap at revision" in out
        assert oct(file.stat().st_mode & 0o777) == "0o600"
        node.kubectl("create", "configmap", "after", "--from-literal=k=v")
        rv_before = int(json.loads(node.kubectl("get", "configmap", "after", "-o", "json")
                                   .stdout)["metadata"]["resourceVersion"])
        code, _, err = shoal("snapshot", "restore", str(file), "--data-dir",
                             str(node.data_dir))
        assert code == 1 and "refusing to restore while the node runs" in err
    finally:
        node.stop()
    code, out, err = shoal("snapshot", "restore", str(file), "--data-dir", str(node.data_dir))
    assert code == 0, err
    assert "writes only it had acknowledged after the snapshot are lost" in out
    assert (node.data_dir / "before-restore" / "state.db").exists()
    replica = Replica(node.data_dir, "snap")
    try:
        # One node, no peer to catch up from: the write after the snapshot is gone, and the
        # next revision is past every one it handed out before.
        assert replica.get("configmaps", "default", "before") is not None
        assert replica.get("configmaps", "default", "after") is None
        assert replica.revision > rv_before + snapshot.REVISION_JUMP - 1
    finally:
        replica.close()


def _snapshot_file(path: Path, created: str, *extra: str) -> Path:
    """A snapshot holding a manifest made at ``created`` and empty files named ``extra``."""
    with tarfile.open(path, "w:gz") as tar:
        body = json.dumps({"format": 1, "created": created}).encode()
        info = tarfile.TarInfo(snapshot.MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for name in extra:
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return path


def test_restore_refuses_what_is_not_a_snapshot_or_escapes_the_data_dir(tmp_path: Path) -> None:
    bad = _snapshot_file(tmp_path / "bad.tar.gz", "2026-01-01T00:00:00+00:00",
                         "pki/../../etc/passwd")
    with pytest.raises(snapshot.SnapshotError, match="unexpected entry"):
        snapshot.restore(tmp_path / "d", bad, force=True)
    assert not (tmp_path / "d").exists()
    (tmp_path / "plain.txt").write_text("hello")
    code, _, err = shoal("snapshot", "restore", str(tmp_path / "plain.txt"), "--data-dir",
                         str(tmp_path / "d"))
    assert code == 1 and "cannot read" in err


def test_restore_refuses_a_snapshot_older_than_the_fences_unless_forced(tmp_path: Path) -> None:
    old = _snapshot_file(tmp_path / "old.tar.gz", "2020-01-01T00:00:00+00:00")
    with pytest.raises(snapshot.SnapshotError, match="days old"):
        snapshot.restore(tmp_path / "d", old)
