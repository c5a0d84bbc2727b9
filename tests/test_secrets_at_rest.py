"""Secrets are encrypted in state.db (AES-GCM, as Kubernetes' aesgcm provider).

No byte of a Secret's value may reach the disk in plaintext: not the objects table, the
WAL, a freed page, nor the last-applied annotation that ``kubectl apply`` writes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.store.persistence import Persistence, Row
from shoal.store.replica import Replica
from shoal.store.secret_encryption import (
    DecryptError,
    SecretCipher,
    key_path,
    load_or_create,
)
from tests.conftest import ShoalProcess, free_port


def disk_bytes(data_dir: Path) -> bytes:
    """Everything SQLite keeps on disk for the replica."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("state.db*")))


def leaks(data_dir: Path, values: list[str]) -> list[str]:
    """The values found on disk, as written or base64-encoded (a Secret's ``data``)."""
    raw = disk_bytes(data_dir)
    return [v for v in values
            if v.encode() in raw or base64.b64encode(v.encode()) in raw]


def secret(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                               "namespace": "default"},
            "data": {"k": base64.b64encode(value.encode()).decode()}}


async def put_all(replica: Replica, objs: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    for resource, name, obj in objs:
        _, fut = replica.put(resource, "default", name, obj, lambda path: None)
        await fut


def test_a_secret_row_holds_an_aesgcm_envelope_and_a_configmap_row_does_not(
        tmp_path: Path) -> None:
    replica = Replica(tmp_path, "n1")
    asyncio.run(put_all(replica, [
        ("secrets", "s", secret("s", "sesame-1")),
        ("configmaps", "c", {"data": {"k": "plain-config"}}),
    ]))
    replica.close()
    db = sqlite3.connect(tmp_path / "state.db")
    rows = dict(db.execute("SELECT resource, value FROM objects").fetchall())
    docs = dict(db.execute("SELECT resource, doc FROM objects").fetchall())
    assert rows["secrets"].startswith(b"k8s:enc:aesgcm:v1:key1:")
    assert docs["secrets"].startswith(b"k8s:enc:aesgcm:v1:key1:")
    assert b"plain-config" in rows["configmaps"]
    assert leaks(tmp_path, ["sesame-1"]) == []
    reopened = Replica(tmp_path, "n1")
    assert reopened.get("secrets", "default", "s")["data"]["k"] == secret("s", "sesame-1")[
        "data"]["k"]
    reopened.close()


def test_the_same_secret_written_twice_gives_two_ciphertexts() -> None:
    cipher = SecretCipher([("key1", b"k" * 32)])
    a, b = cipher.encrypt(b"same", b"ctx"), cipher.encrypt(b"same", b"ctx")
    assert a != b  # a fresh nonce per write
    assert cipher.decrypt(a, b"ctx") == cipher.decrypt(b, b"ctx") == b"same"


def test_a_sealed_value_moved_to_another_row_does_not_decrypt() -> None:
    cipher = SecretCipher([("key1", b"k" * 32)])
    sealed = cipher.encrypt(b"value", b"secrets/default/a/value")
    with pytest.raises(DecryptError):
        cipher.decrypt(sealed, b"secrets/default/b/value")


def test_a_value_sealed_with_an_older_key_still_reads_after_a_new_key_is_added() -> None:
    old = SecretCipher([("key1", b"1" * 32)])
    sealed = old.encrypt(b"value", b"ctx")
    rotated = SecretCipher([("key2", b"2" * 32), ("key1", b"1" * 32)])
    assert rotated.decrypt(sealed, b"ctx") == b"value"
    assert rotated.encrypt(b"value", b"ctx").startswith(b"k8s:enc:aesgcm:v1:key2:")


def test_the_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    first = load_or_create(path)
    sealed = first.encrypt(b"v", b"c")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create(path).decrypt(sealed, b"c") == b"v"


def test_a_plaintext_data_dir_is_sealed_on_start_and_keeps_no_old_value(
        tmp_path: Path) -> None:
    # As an earlier Shoal wrote it: plaintext rows, updated (old versions in freed pages
    # and the WAL) and one deleted.
    old = Persistence(tmp_path / "state.db")
    for i in range(20):
        doc = json.dumps({"data": {"k": f"old-value-{i}"}, "pad": "x" * 3000}).encode()
        old.write_sync([Row("secrets", "default", f"s{i % 4}", i + 1, doc, doc)],
                       {"revision": str(i + 1)})
    old.write_sync([Row("secrets", "default", "s3", 0, b"", None, drop=True)], {})
    old.close()
    values = [f"old-value-{i}" for i in range(20)]
    assert leaks(tmp_path, values), "the old format kept plaintext"
    replica = Replica(tmp_path, "n1")
    assert leaks(tmp_path, values) == []
    assert replica.get("secrets", "default", "s2")["data"]["k"] == "old-value-18"
    assert replica.get("secrets", "default", "s3") is None
    replica.close()
    assert leaks(tmp_path, values) == []


# -- a real node, through kubectl ---------------------------------------------------------


@pytest.mark.slow
def test_no_secret_value_reaches_the_disk_through_the_api(tmp_path: Path) -> None:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    values = ["literal-sesame-41", "applied-string-data-42", "applied-data-43"]
    try:
        node.kubectl("create", "secret", "generic", "created",
                     f"--from-literal=password={values[0]}")
        manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"},
                    "stringData": {"token": values[1]},
                    "data": {"blob": base64.b64encode(values[2].encode()).decode()}}
        node.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        applied = json.loads(node.kubectl("get", "secret", "applied", "-o", "json").stdout)
        # The last-applied annotation carries the values: it must be sealed too.
        assert values[1] in applied["metadata"]["annotations"][
            "kubectl.kubernetes.io/last-applied-configuration"]
        assert (tmp_path / "data" / "state.db-wal").exists()
        assert leaks(node.data_dir, values) == []
        node.stop()
        node.start()
        got = json.loads(node.kubectl("get", "secret", "created", "-o", "json").stdout)
        assert base64.b64decode(got["data"]["password"]).decode() == values[0]
        assert leaks(node.data_dir, values) == []
    finally:
        node.stop()


def _create_secrets(node: ShoalProcess, acked: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        name = f"s-{i}"
        r = node.kubectl("create", "secret", "generic", name, f"--from-literal=v=stream-{i}",
                         check=False, timeout=10)
        if r.returncode != 0:
            return  # the node is gone
        acked.append(name)
        i += 1


@pytest.mark.slow
def test_every_acknowledged_secret_survives_kill_9(tmp_path: Path) -> None:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    acked: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=_create_secrets, args=(node, acked, stop))
    writer.start()
    time.sleep(1.5)
    node.kill9()
    stop.set()
    writer.join(timeout=15)
    assert len(acked) > 3, "creates were running when the node was killed"
    node.start()
    try:
        names = {o["metadata"]["name"] for o in json.loads(
            node.kubectl("get", "secrets", "-o", "json").stdout)["items"]}
        assert [n for n in acked if n not in names] == []
        assert leaks(node.data_dir, [f"stream-{i}" for i in range(len(acked))]) == []
    finally:
        node.stop()
