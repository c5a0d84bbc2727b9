"""Where an idle node's memory goes: imported code against data, by package.

``python -m bench.footprint_where [--src=DIR] [--seconds=N] [--trace] [--pods=N]`` runs
``shoal server`` in this process (process runtime, loopback) and, once it has
served for N seconds (and, with ``--pods``, once that many ``sleep`` pods run on it),
writes:

- ``/proc/self/smaps_rollup`` (RSS, anonymous, file-backed: shared libraries);
- the modules loaded, by top-level package, and the RSS of a fresh interpreter that
  imports only those modules (what the code costs, before any data);
- with ``--trace``, tracemalloc's live memory by package, a module's import charged
  to the module imported (the first frame outside importlib) and other allocations
  to the frame that made them. tracemalloc slows start-up and adds its own memory,
  so its total is read as shares, not as an RSS. With ``--pods``, also what the pods
  added, by the line that allocated it (tracemalloc's snapshot before them against
  the one after), and with ``FOOTPRINT_DUMP=DIR`` in the environment both snapshots
  are written there (``before.snapshot``, ``after.snapshot``: ``tracemalloc.Snapshot.load``)
  to group as one likes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


def smaps_rollup(pid: int | str = "self") -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key.strip()] = round(int(parts[0]) / 1024, 1)
    return out


def _package(filename: str) -> str:
    """``shoal.api`` for a file of Shoal, the distribution's top-level name otherwise."""
    if "/shoal/" in filename:
        tail = filename.rsplit("/shoal/", 1)[1].split("/")
        return "shoal." + tail[0].removesuffix(".py") if len(tail) > 1 else "shoal"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith("<frozen"):
        return filename
    return "stdlib:" + Path(filename).stem


def _traced_by_package() -> dict[str, float]:
    import tracemalloc

    snap = tracemalloc.take_snapshot()
    by: Counter[str] = Counter()
    for stat in snap.statistics("traceback"):
        frames = list(stat.traceback)  # most recent call first
        # An import's allocations belong to the module being imported.
        where = next((f.filename for f in frames if "importlib" not in f.filename
                      and not f.filename.startswith("<frozen")), frames[0].filename)
        by[_package(where)] += stat.size
    return {k: round(v / 2**20, 2) for k, v in by.most_common(40)}


def _modules_by_package() -> dict[str, int]:
    by: Counter[str] = Counter()
    for name in list(sys.modules):
        parts = name.split(".")
        by[".".join(parts[:2]) if parts[0] == "shoal" else parts[0]] += 1
    return dict(by.most_common(60))


def _import_only_rss(modules: list[str]) -> float:
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    try:\n        importlib.import_module(m)\n    except Exception:\n        pass\n"
            "print(open('/proc/self/smaps_rollup').read().split('Rss:')[1].split()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=True)
    return round(int(out.stdout.strip().splitlines()[-1]) / 1024, 1)


def _run_pods(url: str, token: str, count: int) -> None:
    """``count`` sleep pods on this node, created through the API; returns once all run."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = f"{url}/api/v1/namespaces/default/pods"
    for i in range(count):
        body = json.dumps({"metadata": {"name": f"where-{i}"}, "spec": {
            "nodeName": "where-1", "containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}).encode()
        urllib.request.urlopen(urllib.request.Request(base, body, headers), context=ctx).read()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(urllib.request.Request(base, headers=headers),
                                    context=ctx) as r:
            items = json.loads(r.read())["items"]
        if sum((p.get("status") or {}).get("phase") == "Running" for p in items) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError("the pods did not all run")


def report(result_file: Path, trace: bool, before: Any = None) -> None:
    result: dict[str, Any] = {"smaps_rollup_mb": smaps_rollup(), "threads": threading.active_count(),
                              "modules": len(sys.modules), "modules_by_package": _modules_by_package()}
    if trace:
        import tracemalloc

        result["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
        result["traced_by_package_mb"] = _traced_by_package()
        if before is not None:
            after = tracemalloc.take_snapshot()
            dump = os.environ.get("FOOTPRINT_DUMP")  # a dir: both snapshots, to study offline
            if dump:
                before.dump(os.path.join(dump, "before.snapshot"))
                after.dump(os.path.join(dump, "after.snapshot"))
            result["pods_added_traced_kb"] = round(
                sum(d.size_diff for d in after.compare_to(before, "filename")) / 1024, 1)
            result["pods_added_by_caller_kb"] = {
                " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                           for f in list(d.traceback)[-9:][::-1]): round(d.size_diff / 1024, 1)
                for d in after.compare_to(before, "traceback")[:12]}
            diff = after.compare_to(before, "lineno")
            result["pods_added_by_line_kb"] = {
                f"{d.traceback[0].filename.rsplit('site-packages/', 1)[-1]}:"
                f"{d.traceback[0].lineno}": round(d.size_diff / 1024, 1) for d in diff[:30]}
    mods = sorted(m for m in sys.modules if not m.startswith("__") and m != "__main__")
    result["modules_list"] = [m for m in mods if m.startswith("shoal.") or "." not in m]
    result["rss_of_imports_only_mb"] = _import_only_rss(mods)
    result_file.write_text(json.dumps(result, indent=2))


def main() -> None:
    src = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--src=")), None)
    seconds = next((float(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--seconds=")), 5.0)
    trace = "--trace" in sys.argv
    pods = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--pods=")), 0)
    if src:
        sys.path.insert(0, src)
    if trace:
        import tracemalloc

        tracemalloc.start(12 if pods else 40)  # deep stacks make 100 pods crawl
    from bench.api_single_node import _free_port

    work = Path(tempfile.mkdtemp(prefix="shoal-footprint-where-"))
    out = work / "result.json"
    port = _free_port()

    def later() -> None:
        token_file = work / "data" / "pki" / "admin.token"
        while not token_file.exists():  # start-up is slow under tracemalloc
            time.sleep(0.2)
        time.sleep(seconds)
        try:
            before: Any = None
            rss_idle = smaps_rollup()["Rss"]
            if pods:
                if trace:
                    import tracemalloc

                    before = tracemalloc.take_snapshot()
                token = token_file.read_text().strip()
                _run_pods(f"https://127.0.0.1:{port}", token, pods)
                time.sleep(seconds)
            report(out, trace, before)
            result = json.loads(out.read_text())
            result["rss_idle_mb"] = rss_idle
            out.write_text(json.dumps(result, indent=2))
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            print(out.read_text() if out.exists() else "{}", flush=True)
            os._exit(0)

    threading.Thread(target=later, daemon=True).start()
    from shoal.cli.main import main as shoal_main

    sys.argv = ["shoal", "server", "--name", "where-1", "--data-dir", str(work / "data"),
                "--api-port", str(port), "--peer-port", str(_free_port()),
                "--log-level", "warning", "--runtime", "process", "--proxy-mode", "none"]
    shoal_main()


if __name__ == "__main__":
    main()
