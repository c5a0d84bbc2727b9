"""What both demos share: how they print, wait, and start a ``shoal server``."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def wait(check: Callable[[], bool], timeout: float, what: str, every: float = 0.3) -> float:
    """Seconds until ``check()`` held; after ``timeout`` say so and carry on (it is a demo)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(every)
    say(f"(still waiting for {what} after {timeout:.0f}s; moving on)")
    return time.monotonic() - t0


def kubectl(kubeconfig: Path, url: str, *args: str, show: bool = True, check: bool = False,
            stdin: str | None = None, prefix: tuple[str, ...] = ()) -> str:
    """Run kubectl against ``url`` (after ``prefix``, e.g. nsenter); echo it when ``show``."""
    if show:
        print(f"$ kubectl --server {url} {shlex.join(args)}", flush=True)  # as typed
    r = subprocess.run([*prefix, str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig),
                        "--server", url, *args], capture_output=True, text=True, timeout=120,
                       input=stdin)
    if show:
        sys.stdout.write(r.stdout)
        if r.returncode != 0:
            sys.stdout.write(r.stderr)
    if check and r.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def hold(kubeconfig: Path, urls: dict[str, str], inside: dict[str, str] | None = None) -> None:
    """With SHOAL_DEMO_HOLD=1, keep the cluster up for the user (examples/devices.yaml, say)
    until Enter or Ctrl-C; then the demo cleans up as always."""
    if not os.environ.get("SHOAL_DEMO_HOLD"):
        return
    step("the cluster stays up (SHOAL_DEMO_HOLD): press Enter or Ctrl-C to tear it down")
    for name, url in urls.items():
        where = f"{inside[name]} " if inside and name in inside else ""
        say(f"{name}: {where}{BIN / 'kubectl'} --kubeconfig {kubeconfig} --server {url} get nodes")
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        input()


def start_server(args: list[str], log: Path, url: str, name: str) -> subprocess.Popen[bytes]:
    """Start ``args`` (a ``shoal server``) in its own session; return once /readyz answers."""
    with open(log, "ab") as lf:
        proc = subprocess.Popen(args, stdout=lf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} did not start:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to the server's session, SIGKILL if it is still there after 15 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
