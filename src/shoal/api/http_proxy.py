"""pods/proxy and services/proxy: the API forwards an HTTP request to a pod, as Kubernetes does.

``/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`` reaches the pod's port (80 by
default); ``services/[SCHEME:]NAME[:PORT]/proxy/PATH`` reaches one ready pod behind the
Service, the port named or numbered by PORT (the only one when omitted), its target port
resolved per pod. ``kubectl proxy`` and the dashboard-style links use these paths.

The request goes out as HTTP/1.0 with ``Connection: close`` over one connection to the
pod: a TCP connection when the pod runs here, else a port-forward stream to its node over
the peer link (:mod:`shoal.api.pod_proxy`). The response comes back as it arrives (the
body streamed, a chunked one decoded). The client's Authorization header is not forwarded
(kube-apiserver drops it once it has authenticated the request). Only ``http`` is
served; ``https:`` targets are refused with a 400, and WebSocket upgrades are not proxied.
"""

from __future__ import annotations

import random
from typing import Any

from shoal.api import spdy_portforward, web
from shoal.api.errors import ApiError
from shoal.api.pod_proxy import PodProxy, StreamDuplex
from shoal.api.routing import Target
from shoal.control.endpoints import find_port
from shoal.control.pod_state import is_ready
from shoal.model.selectors import LabelSelector, SelectorError
from shoal.node.agent import NodeAgent
from shoal.store.objects import ObjectStore

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "authorization", "content-length",
    "accept-encoding",
})
MAX_HEAD = 64 * 1024
"""Bytes of status line and headers a pod may send before its answer is refused."""


def split_name(name: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` as Kubernetes' proxy paths spell it: (scheme, name, port)."""
    parts = name.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ApiError(400, f"invalid proxy name {name!r}", "BadRequest")


def proxied_path(request: web.Request, plural: str) -> str:
    """The part of the request path after ``.../PLURAL/NAME/proxy``, still encoded."""
    segs = request.raw_path.split("?", 1)[0].split("/")
    for i in range(len(segs) - 2):
        if segs[i] == plural and segs[i + 2] == "proxy":
            return "/" + "/".join(segs[i + 3:])
    return "/"


async def serve(request: web.Request, t: Target, store: ObjectStore,
                agent: NodeAgent | None, proxy: PodProxy | None) -> web.StreamResponse:
    assert t.name is not None
    scheme, name, port_str = split_name(t.name)
    if scheme not in ("", "http"):
        raise ApiError(400, f"the {scheme} scheme is not proxied by this server (http only)",
                       "BadRequest")
    if t.kind.kind == "Pod":
        pod = store.get(t.kind, t.namespace, name)
        if port_str and not port_str.isdigit():
            port = _named_container_port(pod, port_str)
        else:
            port = int(port_str or 80)
    else:
        pod, port = _service_backend(store, t, name, port_str)
    if not 0 < port < 65536:
        raise ApiError(400, f"invalid port {port}", "BadRequest")
    duplex = await _connect(pod, port, agent, proxy)
    try:
        return await _forward(request, duplex, proxied_path(request, t.kind.plural), port,
                              pod)
    finally:
        duplex.close()


def _named_container_port(pod: dict[str, Any], name: str) -> int:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    raise ApiError(503, f"no container port named {name!r} in pod {pod['metadata']['name']}",
                   "ServiceUnavailable")


def _service_backend(store: ObjectStore, t: Target, name: str,
                     port_str: str) -> tuple[dict[str, Any], int]:
    """One ready pod behind the Service and its port for the service port asked for."""
    svc = store.get(t.kind, t.namespace, name)
    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    chosen = [p for p in ports if port_str and (
        p.get("name") == port_str or str(p.get("port")) == port_str)]
    if not port_str and len(ports) == 1:
        chosen = ports
    unavailable = ApiError(503, f'no endpoints available for service "{name}"',
                           "ServiceUnavailable")
    if not chosen or not spec.get("selector"):
        raise unavailable
    try:
        selector = LabelSelector.from_set(spec["selector"])
    except SelectorError as e:
        raise unavailable from e
    pod_kind = store.registry.by_kind("v1", "Pod")
    assert pod_kind is not None
    candidates = []
    for pod in store.list(pod_kind, t.namespace):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not selector.matches(meta.get("labels") or {}):
            continue
        port = find_port(pod, chosen[0])
        if port is not None and is_ready(pod) and (pod.get("spec") or {}).get("nodeName"):
            candidates.append((pod, port))
    if not candidates:
        raise unavailable
    return random.choice(candidates)  # spreads requests over the ready pods


async def _connect(pod: dict[str, Any], port: int, agent: NodeAgent | None,
                   proxy: PodProxy | None) -> spdy_portforward.Duplex:
    meta = pod["metadata"]
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise ApiError(503, f"pod {meta['name']} is not scheduled to a node yet",
                       "ServiceUnavailable")
    if agent is not None and node == agent.node_name:
        address = agent.pod_address(meta.get("namespace", ""), meta["name"])
        try:
            return await spdy_portforward.TcpDuplex.open(address, port)
        except OSError as e:
            raise ApiError(503, f"error trying to reach pod {meta['name']} port {port}: {e}",
                           "ServiceUnavailable") from e
    if proxy is None:
        raise ApiError(503, f'pod {meta["name"]} runs on node "{node}", which this server '
                            "cannot reach", "ServiceUnavailable")
    try:
        stream = await proxy.open(node, {"op": "portforward",
                                         "namespace": meta.get("namespace", ""),
                                         "pod": meta["name"], "uid": meta.get("uid"),
                                         "port": port})
    except ApiError as e:
        if e.code != 500:
            raise
        # The node could not connect to the port: the pod is not serving, as a local refusal.
        raise ApiError(503, f"error trying to reach pod {meta['name']} port {port}: "
                            f"{e.message}", "ServiceUnavailable") from e
    return StreamDuplex(stream)


async def _forward(request: web.Request, duplex: spdy_portforward.Duplex, path: str,
                   port: int, pod: dict[str, Any]) -> web.StreamResponse:
    body = await request.read()
    target = path + (f"?{request.query_string}" if request.query_string else "")
    head = [f"{request.method} {target} HTTP/1.0", f"Host: {pod['metadata']['name']}:{port}",
            "Connection: close", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
    await duplex.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await duplex.recv()
        if chunk is None or len(buf) > MAX_HEAD:
            raise ApiError(502, f"pod {pod['metadata']['name']} port {port} gave no HTTP "
                                "answer", "BadGateway")
        buf += chunk
    raw_head, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as e:
        raise ApiError(502, f"a garbled answer from pod {pod['metadata']['name']}: "
                            f"{lines[0][:80]!r}", "BadGateway") from e
    resp = web.StreamResponse(status=status)
    chunked = False
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif key.lower() == "content-length" and value.strip().isdigit():
            resp.content_length = int(value)
        elif key.strip() and key.lower() not in HOP_BY_HOP:
            resp.headers.add(key.strip(), value.strip())
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    decoder = ChunkedDecoder() if chunked else None
    data: bytes | None = rest
    while data is not None:
        out = decoder.feed(data) if decoder is not None else data
        if out:
            await resp.write(out)
        if decoder is not None and decoder.done:
            break
        data = await duplex.recv()
    await resp.write_eof()
    return resp


class ChunkedDecoder:
    """Decodes a chunked body fed in pieces (a pod may answer HTTP/1.0 with chunks anyway)."""

    def __init__(self) -> None:
        self.buf = b""
        self.left = 0  # data bytes of the current chunk still to come
        self.crlf = False  # the CRLF that ends a chunk's data is still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        while not self.done:
            if self.left:
                take = self.buf[:self.left]
                self.buf = self.buf[len(take):]
                self.left -= len(take)
                out += take
                if self.left:
                    break
                self.crlf = True
            if self.crlf:
                if len(self.buf) < 2:
                    break
                self.buf, self.crlf = self.buf[2:], False
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                break
            self.buf = rest
            try:
                self.left = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                self.left = 0
            self.done = self.left == 0
        return bytes(out)
