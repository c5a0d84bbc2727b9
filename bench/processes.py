"""Starting Shoal nodes and etcd members for the benchmarks, on loopback or in namespaces."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class ShoalMember:
    name: str
    work: Path
    host: str = "127.0.0.1"
    api_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    prefix: list[str] = field(default_factory=list)  # e.g. `ip netns exec NS`
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.work / self.name

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def peer_address(self) -> str:
        return f"{self.host}:{self.peer_port}"

    @property
    def token(self) -> str:
        return (self.data / "pki" / "admin.token").read_text().strip()

    def ca(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data / "pki" / "ca.crt"))

    def start(self, *extra: str) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        bind = ["--bind", "0.0.0.0", "--advertise", self.host] if self.prefix else \
            ["--bind", self.host]
        args = [*self.prefix, str(BIN / "shoal"), "server", "--name", self.name,
                "--data-dir", str(self.data), "--api-port", str(self.api_port),
                "--peer-port", str(self.peer_port), "--log-level", "warning", *bind,
                *([] if "--runtime" in extra else ["--runtime", "process"]),
                *([] if self.prefix else ["--proxy-mode", "none"]),  # host nftables untouched
                *extra]
        log = open(self.work / f"{self.name}.log", "ab")  # noqa: SIM115 - the process's life
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.work / f"{self.name}.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=_insecure(), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def join_token(self) -> str:
        return subprocess.run([str(BIN / "shoal"), "token", "create", "--data-dir",
                               str(self.data)], check=True, capture_output=True,
                              text=True).stdout.strip()

    def session(self) -> KeepAlive:
        """A persistent HTTPS connection, as kubectl and client-go keep one."""
        return KeepAlive(self.host, self.api_port, self.ca(), self.token)

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 10) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ca(), timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    def node_names(self) -> set[str]:
        code, body = self.request("GET", "/api/v1/nodes")
        return {i["metadata"]["name"] for i in body["items"]} if code == 200 else set()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class KeepAlive:
    """One reused HTTP(S) connection for latency measurements (no handshake per request)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None = None,
                 token: str | None = None) -> None:
        import http.client

        self._conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(host, port, context=ctx, timeout=10) if ctx is not None
            else http.client.HTTPConnection(host, port, timeout=10))
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        self._conn.request(method, path, body=data, headers=self._headers)
        r = self._conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self._conn.close()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def start_shoal_cluster(members: list[ShoalMember], advertise: list[str] | None = None) -> None:
    """Start the first member, then join the others through it (optionally via proxies)."""
    first = members[0]
    first_extra = ["--peer-advertise", advertise[0]] if advertise else []
    first.start(*first_extra)
    token = first.join_token()
    seed = advertise[0] if advertise else first.peer_address
    for i, m in enumerate(members[1:], start=1):
        extra = ["--join", seed, "--token", token]
        if advertise:
            extra += ["--peer-advertise", advertise[i]]
        m.start(*extra)
    names = {m.name for m in members}
    for m in members:
        wait_until(lambda m=m: m.node_names() == names, 60, f"{m.name} to see every member")


@dataclass
class EtcdMember:
    name: str
    work: Path
    host: str = "127.0.0.1"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self, initial_cluster: str, advertise_peer: str) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        listen = "0.0.0.0" if self.prefix else self.host
        args = [*self.prefix, "etcd", "--name", self.name, "--data-dir",
                str(self.work / f"etcd-{self.name}"),
                "--listen-client-urls", f"http://{listen}:{self.client_port}",
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", f"http://{listen}:{self.peer_port}",
                "--initial-advertise-peer-urls", advertise_peer,
                "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "shoal-bench", "--log-level", "error"]
        log = open(self.work / f"etcd-{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def put(self, key: str, value: str, timeout: float = 5) -> bool:
        import base64

        body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                           "value": base64.b64encode(value.encode()).decode()}).encode()
        req = urllib.request.Request(f"{self.client_url}/v3/kv/put", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status == 200 and "header" in json.loads(r.read())
        except (OSError, ValueError):
            return False

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        return {}

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(p / 100 * len(s)))]

    return {"n": len(s), "p50_ms": pct(50) * 1000, "p90_ms": pct(90) * 1000,
            "p99_ms": pct(99) * 1000, "max_ms": s[-1] * 1000}
