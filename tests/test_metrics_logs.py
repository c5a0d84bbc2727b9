"""shoal server --log-format json: one JSON object per line, each with the node's name."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from shoal.cli.log_format import JsonFormatter
from tests.conftest import ShoalProcess, free_port


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
