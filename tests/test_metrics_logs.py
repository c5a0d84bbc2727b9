"""shoal server --log-format json (one JSON object per line, with the node's name) and the
rotation of container log files."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from shoal.cli.log_format import JsonFormatter
from shoal.node.logs import LogOptions, attempts, read_logs
from shoal.node.runtime_process import LogFile
from tests.conftest import ShoalProcess, free_port
from tests.test_cluster import wait_for


def test_a_record_is_one_line_of_json_with_the_node_name() -> None:
    record = logging.LogRecord("shoal.mesh", logging.WARNING, __file__, 1,
                               "peer %s said:\n%s", ("b", "two\nlines"), None)
    line = JsonFormatter("pi-1").format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["node"] == "pi-1" and entry["level"] == "warning"
    assert entry["logger"] == "shoal.mesh" and entry["message"] == "peer b said:\ntwo\nlines"
    assert entry["time"].endswith("Z") and "T" in entry["time"]


def test_an_exception_travels_in_its_own_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("shoal", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    entry = json.loads(JsonFormatter("n").format(record))
    assert entry["message"] == "failed" and "ValueError: boom" in entry["exception"]


@pytest.mark.slow
def test_a_server_logs_json_lines(tmp_path: Path) -> None:
    node = ShoalProcess("json-node", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start(["--log-format", "json"])
    try:
        node.kubectl("get", "nodes")
    finally:
        node.stop()
    lines = [line for line in node.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert len(entries) > 10
    assert {e["node"] for e in entries} == {"json-node"}
    assert any("serving the Kubernetes API" in e["message"] for e in entries)


# -- container log rotation -----------------------------------------------------------------


def test_a_container_log_rotates_at_its_size_and_keeps_max_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogFile, "max_bytes", 1000)
    monkeypatch.setattr(LogFile, "max_files", 3)
    path = tmp_path / "c" / "0.log"
    log = LogFile(path)
    for i in range(100):  # about 50 bytes a record: 5,000 bytes, rotated every 1,000
        log.record(1.0 + i, "stdout", b"F", b"line %03d" % i)
    log.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["0.log", "0.log.1", "0.log.2"], "the current file and two rotated"
    assert all(p.stat().st_size <= 1000 for p in path.parent.iterdir())
    assert path.read_bytes().rstrip().endswith(b"line 099")
    assert attempts(path.parent) == [path], "rotated files are not container attempts"
    older = (path.parent / "0.log.1").read_bytes().splitlines()
    newer = path.read_bytes().splitlines()
    assert int(older[-1].split()[-1]) + 1 == int(newer[0].split()[-1]), "nothing lost between"


async def test_following_a_log_goes_on_in_the_rotated_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogFile, "max_bytes", 600)
    monkeypatch.setattr(LogFile, "max_files", 2)
    path = tmp_path / "0.log"
    log = LogFile(path)
    log.record(1.0, "stdout", b"F", b"first")
    running = True
    seen: list[bytes] = []

    async def follow() -> None:
        async for chunk in read_logs(path, LogOptions(follow=True), lambda: running):
            seen.extend(chunk.splitlines())

    task = asyncio.create_task(follow())
    for i in range(40):
        log.record(2.0 + i, "stdout", b"F", b"n%02d" % i)
        await asyncio.sleep(0.02)
    assert (tmp_path / "0.log.1").exists(), "the file rotated while it was followed"
    running = False
    log.close()
    await asyncio.wait_for(task, 5)
    assert seen == [b"first", *(b"n%02d" % i for i in range(40))]


@pytest.mark.slow
def test_a_server_rotates_a_chatty_containers_log(tmp_path: Path) -> None:
    node = ShoalProcess("rotating", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start(["--container-log-max-size", "2Ki", "--container-log-max-files", "3"])
    try:
        node.kubectl("apply", "-f", "-", input=CHATTY)
        logs = node.data_dir / "pods"

        def rotated() -> bool:
            return len(list(logs.glob("*/talk/0.log*"))) == 3
        wait_for(rotated, 60, "the log to rotate into three files")
        wait_for(lambda: "line 999" in node.kubectl("logs", "chatty", check=False).stdout, 30,
                 "kubectl logs to read the current file")
        out = node.kubectl("logs", "chatty").stdout.splitlines()
        assert out[-1] == "line 999" and len(out) < 1000, "only the current file is read"
        assert all(p.stat().st_size <= 2048 for p in logs.glob("*/talk/0.log*"))
    finally:
        node.stop()


CHATTY = """
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  containers:
  - name: talk
    image: busybox
    command: ["sh", "-c", "i=0; while [ $i -lt 1000 ]; do echo line $i; i=$((i+1)); done; sleep 3600"]
"""
