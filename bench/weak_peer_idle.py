"""A real weak peer's idle traffic (issue 10: at most 0.25 kbit/s per weak peer).

Six ``shoal server`` processes, each in its own network namespace on one bridge
(``tests/tools/netns.py``; root and iproute2 needed): site ``a`` has two super-peers
(``s1``, the first started, and ``s2``) and a weak peer ``w`` (``--sync-via super``),
site ``b`` three full peers. After ``--settle`` seconds (every Node and Lease written,
every member known) the weak peer's traffic is counted over ``--idle`` seconds of idle:

- ``frames``: the bytes of the peer transport's frames (header and payload, what the
  node's ``shoal_peer_sent_bytes`` / ``shoal_peer_received_bytes`` count), in and out,
  broken down by channel, frame type and mesh message type, and of the documents in
  Push and PullReply messages by resource. The weak peer runs under a tap (this module
  with ``--tap FILE``) that wraps the transport's frame writer and reader and writes
  the counters to FILE every second, so the node itself is unchanged;
- ``wire``: the bytes of the weak peer's veth (TLS records, TCP/IP headers and ACKs
  included), from the root namespace's end of the pair.

``python -m bench.weak_peer_idle [--runs=1] [--settle=60] [--idle=120] [--src=DIR]
[--label=NAME] [--weak-args="--heartbeat-interval 30"] [--output=FILE]`` writes ``bench/results/weak-peer-idle-<time>.json``
(``--src``: the ``src`` directory of another tree to run, e.g. an older commit's, put
first on PYTHONPATH). Figures are kbit/s, in and out together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LAYOUT = (  # name, flags
    ("s1", ["--site", "a", "--super-peer"]),
    ("s2", ["--site", "a", "--super-peer"]),
    ("w", ["--site", "a", "--sync-via", "super"]),
    ("f1", ["--site", "b"]),
    ("f2", ["--site", "b"]),
    ("f3", ["--site", "b"]),
)
WEAK = "w"
NODE_ARGS = ["--dns-port", "0", "--ingress-http-port", "0", "--ingress-https-port", "0",
             "--no-bus", "--pod-network", "host", "--proxy-mode", "none"]
MESH_TYPES = {0: "Ping", 1: "Ack", 2: "PingReq", 3: "Nack", 4: "Gossip", 5: "Join",
              6: "State", 7: "Push", 8: "Pull", 9: "PullReply", 10: "Digest", 11: "Refused"}


# -- the tap: runs inside the weak peer's process -------------------------------------


def _tap(out: Path, argv: list[str]) -> None:
    """Run the ``shoal`` console script ``argv[0]`` with ``argv[1:]``, counting every frame
    of the peer transport into ``out`` (JSON, rewritten every second)."""
    import runpy

    import orjson

    from shoal.mesh import tls_transport

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def kind(channel: int, ftype: int, payload: bytes) -> tuple[str, list[tuple[str, int]]]:
        """The frame's key, and (resource, bytes) of each document a Push or PullReply holds."""
        ch = tls_transport.Channel(channel).name.lower()
        ft = tls_transport.FrameType(ftype).name.lower()
        if ch != "mesh" or not payload:
            return f"{ch}/{ft}", []
        from shoal.mesh.messages import tag_of

        tag = tag_of(payload)
        name = MESH_TYPES.get(tag, f"tag{tag}") if tag is not None else "?"
        docs: list[tuple[str, int]] = []
        if tag in (7, 9):
            with contextlib.suppress(Exception):
                body = orjson.loads(payload)
                lists = [body[2]] if tag == 7 else [p[3] for p in body[1]]
                docs = [(d[0], len(orjson.dumps(d))) for ds in lists for d in ds]
        return f"mesh/{name}", docs

    def count(direction: str, peer: str | None, channel: int, ftype: int,
              payload: bytes) -> None:
        key, docs = kind(channel, ftype, payload)
        size = tls_transport._HEADER.size + len(payload)
        with lock:
            counts[f"{direction}|{key}|bytes"] += size
            counts[f"{direction}|{key}|frames"] += 1
            counts[f"{direction}|peer:{peer}|bytes"] += size
            for resource, n in docs:
                counts[f"{direction}|doc:{key.split('/')[1]}:{resource}|bytes"] += n
                counts[f"{direction}|doc:{key.split('/')[1]}:{resource}|docs"] += 1

    conn = tls_transport._Conn
    write, read_frame = conn.write, conn.read_frame

    def tapped_write(self: Any, ftype: Any, channel: Any, rid: int, payload: bytes) -> None:
        write(self, ftype, channel, rid, payload)
        count("out", self.peer.name, int(channel), int(ftype), payload)

    async def tapped_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        got = await read_frame(self, *args, **kwargs)
        ft, ch, _, payload = got
        count("in", self.peer.name, int(ch), int(ft), payload)
        return got

    conn.write = tapped_write  # type: ignore[method-assign]
    conn.read_frame = tapped_read  # type: ignore[method-assign]

    def dump() -> None:
        while True:
            with lock:
                snapshot = dict(counts)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"time": time.time(), "counts": snapshot}))
            tmp.replace(out)
            time.sleep(1.0)

    threading.Thread(target=dump, daemon=True).start()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


# -- the run ----------------------------------------------------------------------------


def _read_tap(path: Path) -> dict[str, int]:
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text())["counts"])
        time.sleep(0.1)
    raise RuntimeError(f"no tap counters in {path}")


def _veth(host_if: str) -> int:
    """Bytes through the weak peer's veth, both ways (its root-namespace end)."""
    stats = Path("/sys/class/net") / host_if / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def _kbits(nbytes: float, seconds: float) -> float:
    return round(nbytes * 8 / 1000 / seconds, 3)


def breakdown(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, Any]:
    """The counters' growth over the window, as kbit/s (bytes) and per second (counts)."""
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total = sum(v for k, v in grown.items()
                if k.endswith("|bytes") and k.split("|")[1].startswith(("mesh/", "control/",
                                                                         "stream/")))
    by_type: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    ndocs: Counter[str] = Counter()
    peers: Counter[str] = Counter()
    for k, v in grown.items():
        direction, key, unit = k.split("|")
        if key.startswith("peer:"):
            peers[f"{direction} {key[5:]}"] += v
        elif key.startswith("doc:"):
            (docs if unit == "bytes" else ndocs)[f"{direction} {key[4:]}"] += v
        elif unit == "bytes":
            by_type[f"{direction} {key}"] += v
        else:
            frames[f"{direction} {key}"] += v
    return {
        "kbit_s": _kbits(total, seconds),
        "by_type_kbit_s": {k: _kbits(v, seconds) for k, v in sorted(by_type.items()) if v},
        "frames_per_s": {k: round(v / seconds, 3) for k, v in sorted(frames.items()) if v},
        "bytes_per_frame": {k: round(by_type[k] / frames[k]) for k in sorted(frames)
                            if frames[k]},
        "docs_kbit_s": {k: _kbits(v, seconds) for k, v in sorted(docs.items()) if v},
        "docs_per_s": {k: round(v / seconds, 3) for k, v in sorted(ndocs.items()) if v},
        "by_peer_kbit_s": {k: _kbits(v, seconds) for k, v in sorted(peers.items()) if v},
    }


def run_once(settle: float, idle: float) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.tools.netns import NetnsLab

    from bench.processes import BIN, ShoalMember, wait_until

    work = Path(tempfile.mkdtemp(prefix="shoal-weak-idle-"))
    tap = work / "tap.json"
    members: list[ShoalMember] = []
    with NetnsLab() as lab:
        try:
            spaces = {}
            for name, flags in LAYOUT:
                ns = lab.add(name)
                spaces[name] = ns
                prefix = ns.exec_args([])
                if name == WEAK:
                    prefix = [*prefix, sys.executable, "-m", "bench.weak_peer_idle", "--tap",
                              str(tap)]
                m = ShoalMember(name, work, host=ns.ip, prefix=prefix)
                join = (["--join", members[0].peer_address, "--token", members[0].join_token()]
                        if members else [])
                members.append(m)
                extra = _arg("weak-args", "").split() if name == WEAK else []
                m.start(*NODE_ARGS, *flags, *extra, *join)
            names = {n for n, _ in LAYOUT}
            first = members[0]
            wait_until(lambda: first.node_names() == names, 60, "every Node")
            time.sleep(settle)
            before, wire_before, t0 = _read_tap(tap), _veth(spaces[WEAK].host_if), time.time()
            time.sleep(idle)
            after, wire_after, t1 = _read_tap(tap), _veth(spaces[WEAK].host_if), time.time()
            seconds = t1 - t0
            out = breakdown(before, after, seconds)
            out["wire_kbit_s"] = _kbits(wire_after - wire_before, seconds)
            out["window_s"] = round(seconds, 1)
            out["alive"] = [m.name for m in members if m.proc is not None
                            and m.proc.poll() is None]
            out["shoal"] = subprocess.run(
                [str(BIN / "python"), "-c", "import shoal; print(shoal.__file__)"],
                capture_output=True, text=True).stdout.strip()
            return out
        finally:
            for m in members:
                m.stop()
            shutil.rmtree(work, ignore_errors=True)


def _arg(name: str, default: str) -> str:
    return next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), default)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--tap":
        _tap(Path(sys.argv[2]), sys.argv[3:])
        return
    src = _arg("src", "")
    if src:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve()), str(REPO)])
    else:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    runs, settle, idle = int(_arg("runs", "1")), float(_arg("settle", "60")), \
        float(_arg("idle", "120"))
    results = []
    for i in range(runs):
        load = os.getloadavg()
        r = run_once(settle, idle)
        r["load_before"] = [round(x, 2) for x in load]
        r["load_after"] = [round(x, 2) for x in os.getloadavg()]
        print(f"run {i + 1}: {r['kbit_s']} kbit/s frames, {r['wire_kbit_s']} kbit/s wire "
              f"(load {r['load_before'][0]})", flush=True)
        results.append(r)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    report = {"bench": "weak_peer_idle", "label": _arg("label", ""), "src": src or None,
              "head": commit, "layout": [[n, f] for n, f in LAYOUT], "settle_s": settle,
              "idle_s": idle, "runs": results}
    out = Path(_arg("output", str(RESULTS / time.strftime(
        "weak-peer-idle-%Y%m%dT%H%M%SZ.json", time.gmtime()))))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
