"""Liveness, readiness and startup probes: exec, httpGet and tcpSocket.

A :class:`Prober` runs one probe of one container attempt: it waits
``initialDelaySeconds``, then probes every ``periodSeconds`` with a
``timeoutSeconds`` limit, and reports a result only when ``successThreshold``
successes or ``failureThreshold`` failures in a row change it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# (argv, timeout) -> (exit code, output)
ExecFn = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A probe port is a number or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} not found in the container's ports")


async def _http_get(spec: dict[str, Any], host: str, port: int, timeout: float) -> tuple[bool, str]:
    path = str(spec.get("path") or "/")
    host = str(spec.get("host") or host)
    headers = "".join(f"{h.get('name')}: {h.get('value')}\r\n"
                      for h in spec.get("httpHeaders") or [])
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
        import ssl
        ctx: ssl.SSLContext | None = ssl.create_default_context()
        assert ctx is not None
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either
    else:
        ctx = None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\n"
                     f"Accept: */*\r\n{headers}Connection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    parts = line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


async def probe_once(probe: dict[str, Any], container: dict[str, Any], host: str,
                     exec_fn: ExecFn) -> tuple[bool, str]:
    """Run the probe once: (success, message on failure)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "exec" in probe:
            argv = [str(a) for a in ((probe["exec"] or {}).get("command") or [])]
            code, out = await exec_fn(argv, timeout)
            return code == 0, out.decode("utf-8", "replace")[-512:]
        if "httpGet" in probe:
            spec = probe["httpGet"] or {}
            return await _http_get(spec, host, resolve_port(spec.get("port"), container), timeout)
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"] or {}
            port = resolve_port(spec.get("port"), container)
            _, w = await asyncio.wait_for(
                asyncio.open_connection(str(spec.get("host") or host), port), timeout)
            w.close()
            return True, ""
        if "grpc" in probe:
            return False, "grpc probes are not supported yet"
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, ValueError) as e:
        return False, str(e)
    return False, "probe has no handler"


class Prober:
    """Runs one probe until cancelled, calling ``on_result`` whenever its result flips."""

    def __init__(self, kind: str, probe: dict[str, Any], container: dict[str, Any], host: str,
                 exec_fn: ExecFn, on_result: Callable[[str, bool, str], None],
                 initial: bool, time_scale: float = 1.0) -> None:
        self.kind = kind  # liveness, readiness or startup
        self.probe = probe
        self.container = container
        self.host = host
        self.exec_fn = exec_fn
        self.on_result = on_result
        self.result = initial
        self.time_scale = time_scale  # tests shrink periods (the API only takes whole seconds)

    async def run(self) -> None:
        p = self.probe
        period = max(float(p.get("periodSeconds") or 10) * self.time_scale, 0.01)
        success_needed = int(p.get("successThreshold") or 1)
        failure_needed = int(p.get("failureThreshold") or 3)
        await asyncio.sleep(float(p.get("initialDelaySeconds") or 0) * self.time_scale)
        successes = failures = 0
        while True:
            ok, message = await probe_once(p, self.container, self.host, self.exec_fn)
            if ok:
                successes, failures = successes + 1, 0
                if not self.result and successes >= success_needed:
                    self.result = True
                    self.on_result(self.kind, True, "")
            else:
                successes, failures = 0, failures + 1
                if failures >= failure_needed and (self.result or self.kind != "readiness"):
                    # Readiness reports a flip; liveness and startup report every failed streak.
                    self.result = False
                    failures = 0
                    self.on_result(self.kind, False, message)
            await asyncio.sleep(period)
