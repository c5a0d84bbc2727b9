"""The data dir is the node's alone: 0700, the replica and every key and credential 0600,
also when an older data dir with looser modes is started again."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shoal.store.replica import Replica
from tests.conftest import ShoalProcess, free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose_files(data_dir: Path) -> dict[str, str]:
    """Private files that others could read: the replica, keys, tokens, kubeconfigs."""
    out: dict[str, str] = {}
    private = [*data_dir.glob("state.db*"), *(p for p in (data_dir / "pki").iterdir()
                                              if p.is_file())]
    for p in private:
        if mode(p) & 0o077:
            out[str(p.relative_to(data_dir))] = oct(mode(p))
    return out


def test_a_replica_makes_its_data_dir_and_database_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "state.db").touch(mode=0o644)
    os.chmod(data / "state.db", 0o644)  # as an older Shoal left it
    Replica(data, "n1").close()
    assert mode(data) == 0o700
    assert mode(data / "state.db") == 0o600
    assert mode(data / "pki" / "secrets-encryption.key") == 0o600


@pytest.mark.slow
def test_a_node_keeps_its_files_private_and_tightens_an_older_data_dir(
        tmp_path: Path) -> None:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    try:
        data = node.data_dir
        assert mode(data) == 0o700
        assert mode(data / "pki") == 0o700
        assert (data / "state.db-wal").exists() and (data / "state.db-shm").exists()
        assert loose_files(data) == {}
        for name in ("ca.key", "admin.key", "server.key", "secrets-encryption.key"):
            assert mode(data / "pki" / name) == 0o600, name
        node.stop()
        # An older Shoal's modes: the data dir, the database and its WAL open to all.
        os.chmod(data, 0o755)
        for p in data.glob("state.db*"):
            os.chmod(p, 0o644)
        node.start()
        assert mode(data) == 0o700
        assert loose_files(data) == {}
    finally:
        node.stop()
