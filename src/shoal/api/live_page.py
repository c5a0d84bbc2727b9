"""What a node sees of the cluster, as JSON (``shoal status``) and as a live page (``/ui/``).

``GET /shoal/v1/status`` answers from the serving node alone, so it works on a site that
is cut off and shows what that site sees:

- the members and their state in this node's membership (alive, suspect, dead, left),
  with address, role and site tags;
- replication per peer: the cursor pulled up to and how many revisions behind it is,
  and the bytes on the link;
- pods per node (by phase) and each Node's Ready condition, from the replica;
- the links between members: this node's own view for its links, and for the others
  what each peer last reported of its own membership (asked over the peer link, kept
  with the time it came: a peer across a cut keeps its last report);
- a timeline: membership transitions this node saw (cuts, heals, joins, leaves), Nodes
  turning unreachable and back, pods marked not ready on a lost node (one line per node),
  a ReplicaSet's new pod while some of its pods sit on a node that is not Ready (Shoal's
  eviction: it replaces them and deletes nothing), and pods removed by their ReplicaSet
  soon after a heal (the trim);
- this node's scopes, when the mesh reports them.

``GET /shoal/v1/status/stream`` sends the same document as server-sent events, once a
second when it changed (and at least every 15 s). Both are authenticated like the API
and allowed to a caller that may get the non-resource URL (``/shoal/v1/status*``) or list
nodes: a node's own certificate may, so ``shoal status --data-dir`` works on any node.

``/ui/`` is a static page (packaged with Shoal, no asset from the internet) that asks for
a bearer token, keeps it in ``sessionStorage``, and reads the stream with ``fetch`` so
the token travels in the ``Authorization`` header rather than in a URL. The page itself
holds no data, so it is served without a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shoal.api import web
from shoal.api.authorization import authorize
from shoal.api.metrics import lag_by_peer
from shoal.api.resource_metrics import PeerReports
from shoal.api.resources import json_response
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer
from shoal.authz.user import UserInfo
from shoal.mesh.events_log import MembershipLog
from shoal.mesh.peer import MeshPeer
from shoal.mesh.topology import ROLE_TAG, SITE_TAG
from shoal.store.change_feed import Change
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

PATH = "/shoal/v1/status"
STREAM_PATH = "/shoal/v1/status/stream"
UI_PREFIX = "/ui/"
TRIM_WINDOW = 120.0
"""Seconds after a heal or a node's return during which a ReplicaSet removing a pod is
called a trim on the timeline (otherwise it is a scale-down, not shown)."""
TIMELINE = 200
_UI_FILES = {"index.html": "text/html", "app.js": "application/javascript",
             "app.css": "text/css"}
_CUT_STATES = ("suspect", "dead")


@dataclass
class Timeline:
    """The cluster events the page shows, from the replica's change feed."""

    capacity: int = TIMELINE
    clock: Callable[[], float] = time.time
    entries: deque[dict[str, Any]] = field(default_factory=deque)
    last_heal: float = float("-inf")
    replica: Replica | None = None
    """Where a pod's node and its siblings are looked up (None: those entries are left out)."""

    def add(self, kind: str, subject: str, message: str, at: float | None = None) -> None:
        self.entries.append({"time": self.clock() if at is None else at, "kind": kind,
                             "subject": subject, "message": message})
        while len(self.entries) > self.capacity:
            self.entries.popleft()

    def healed(self, at: float) -> None:
        self.last_heal = max(self.last_heal, at)

    def observe(self, c: Change) -> None:
        if c.resource == "nodes":
            before, after = _ready(c.old), _ready(c.obj)
            if c.type == "DELETED" or before == after or after is None:
                return
            if after != "True" and before in ("True", None) and c.old is not None:
                self.add("node-lost", c.name, f"node {c.name} is unreachable (Ready={after})")
            elif after == "True" and before not in ("True", None):
                self.healed(self.clock())
                self.add("node-back", c.name, f"node {c.name} is Ready again")
        elif c.resource == "events" and c.type == "ADDED":
            if c.obj.get("reason") == "NodeNotReady":
                self._not_ready(c.obj.get("involvedObject") or {})
        elif c.resource == "pods" and c.type == "ADDED":
            self._replacement(c)
        elif c.resource == "pods" and c.type == "DELETED":
            owners = (c.obj.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("kind") == "ReplicaSet" for o in owners if isinstance(o, dict)) and \
                    self.clock() - self.last_heal <= TRIM_WINDOW:
                node = (c.obj.get("spec") or {}).get("nodeName") or "?"
                self.add("trim", f"{c.namespace}/{c.name}",
                         f"pod {c.namespace}/{c.name} on {node} trimmed after the merge")

    def _not_ready(self, pod: Mapping[str, Any]) -> None:
        """Pods marked not ready on a lost node, one line per node and burst."""
        found = self.replica.get("pods", str(pod.get("namespace") or ""),
                                 str(pod.get("name") or "")) if self.replica else None
        node = str(((found or {}).get("spec") or {}).get("nodeName") or "?")
        last = self.entries[-1] if self.entries else None
        if last is not None and last["kind"] == "not-ready" and last["subject"] == node and \
                self.clock() - last["time"] < 30.0:
            last["count"] += 1
            last["message"] = f"{last['count']} pods on node {node} marked not ready"
            return
        self.add("not-ready", node, f"1 pod on node {node} marked not ready")
        self.entries[-1]["count"] = 1

    def _replacement(self, c: Change) -> None:
        """A ReplicaSet's new pod while one of its pods sits on a node that is not Ready: the
        replacement Shoal starts instead of evicting (the trim decides after the heal)."""
        if self.replica is None:
            return
        owners = [o.get("uid") for o in (c.obj.get("metadata") or {}).get("ownerReferences")
                  or [] if isinstance(o, dict) and o.get("kind") == "ReplicaSet"]
        if not owners:
            return
        # Nodes are few; pods are scanned only while some node is not Ready.
        unready = {key[1] for key, entry in self.replica.iter_entries("nodes")
                   if entry.value is not None and _ready(entry.value) not in ("True", None)}
        if not unready:
            return
        lost: set[str] = set()
        for _key, entry in self.replica.iter_entries("pods"):
            p = entry.value
            if p is None or p["metadata"].get("name") == c.name:
                continue
            if not any(o.get("uid") in owners for o in p["metadata"].get("ownerReferences")
                       or [] if isinstance(o, dict)):
                continue
            node = (p.get("spec") or {}).get("nodeName")
            if node in unready:
                lost.add(str(node))
        if lost:
            self.add("replace", f"{c.namespace}/{c.name}",
                     f"pod {c.namespace}/{c.name} started to replace pods on unreachable "
                     f"node{'s' if len(lost) > 1 else ''} {', '.join(sorted(lost))}")

    async def follow(self, replica: Replica) -> None:
        sub = replica.subscribe(lambda c: c.resource in ("nodes", "events", "pods"))
        try:
            while True:
                change = await sub.queue.get()
                if change is None:  # the feed dropped us: subscribe again
                    sub = replica.subscribe(sub.accept)
                    continue
                with contextlib.suppress(Exception):
                    self.observe(change)
        finally:
            sub.close()


def _ready(node: Mapping[str, Any] | None) -> str | None:
    for c in ((node or {}).get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return str(c.get("status"))
    return None


def member_rows(mesh: MeshPeer | None, me: str, now: float) -> list[dict[str, Any]]:
    if mesh is None:
        return [{"name": me, "address": "", "state": "alive", "self": True, "tags": {}}]
    rows = []
    for m in sorted(mesh.members(), key=lambda m: m.name):
        tags = dict(m.tags)
        rows.append({"name": m.name, "address": m.address, "state": m.state.name.lower(),
                     "incarnation": m.incarnation, "self": m.name == me,
                     "for_seconds": max(0.0, now - m.since) if m.since else None,
                     "role": tags.get(ROLE_TAG, "full"), "site": tags.get(SITE_TAG, ""),
                     "tags": tags})
    return rows


def own_view(mesh: MeshPeer | None, me: str) -> dict[str, Any]:
    """What this node answers a peer's ``status`` stream with: its membership view."""
    members = {} if mesh is None else {m.name: m.state.name.lower() for m in mesh.members()}
    return {"node": me, "time": time.time(), "members": members}


def links(me: str, members: Iterable[str], mine: Mapping[str, str],
          views: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of members, ``up``, ``cut``, ``gone`` or ``unknown``: a link is cut when
    either end (this node for its own links, else the end's last report) holds the other
    suspect or dead, gone when one left, up when every known view says alive."""
    names = sorted(set(members))
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            said: list[tuple[str, str]] = []
            for x, y in ((a, b), (b, a)):
                if x == me:
                    state = mine.get(y)
                else:
                    state = ((views.get(x) or {}).get("members") or {}).get(y)
                if state is not None:
                    said.append((x, str(state)))
            states = {s for _, s in said}
            if "left" in states or (a != me and mine.get(a) == "left") or \
                    (b != me and mine.get(b) == "left"):
                verdict = "gone"
            elif states & set(_CUT_STATES):
                verdict = "cut"
            elif said and states == {"alive"}:
                verdict = "up"
            else:
                verdict = "unknown"
            out.append({"a": a, "b": b, "state": verdict,
                        "seen_by": {x: s for x, s in said}})
    return out


def pods_per_node(replica: Replica) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for _key, entry in replica.iter_entries("pods"):
        p = entry.value
        if p is None:
            continue
        node = (p.get("spec") or {}).get("nodeName") or ""
        phase = str((p.get("status") or {}).get("phase") or "Pending")
        by_phase = out.setdefault(node, {})
        by_phase[phase] = by_phase.get(phase, 0) + 1
    return out


class StatusService:
    """Builds this node's status document and serves it, its stream and the page."""

    def __init__(self, node: str, replica: Replica, mesh: Callable[[], MeshPeer | None],
                 membership_log: MembershipLog, timeline: Timeline, peers: PeerReports,
                 *, peer_stats: Callable[[], Mapping[str, Any]] = lambda: {},
                 scopes: Callable[[], Any] | None = None, interval: float = 1.0,
                 authenticate: Callable[[web.Request], UserInfo] | None = None,
                 authorizer: Authorizer | None = None,
                 catch_up: Callable[[], Mapping[str, Any] | None] | None = None) -> None:
        self.node = node
        self.catch_up = catch_up
        """Whether this node has caught up with the mesh (``shoal.mesh.catch_up``)."""
        self.replica = replica
        self.mesh = mesh
        self.membership_log = membership_log
        self.timeline = timeline
        self.peers = peers
        self.peer_stats = peer_stats
        self.scopes = scopes
        self.interval = interval
        self.authenticate = authenticate
        self.authorizer = authorizer

    def _note_heals(self) -> None:
        for e in self.membership_log.recent():
            if e.kind == "heal":
                self.timeline.healed(e.time)

    async def report(self, ask_peers: bool = True) -> dict[str, Any]:
        now = time.time()
        mesh = self.mesh()
        self._note_heals()
        members = member_rows(mesh, self.node, _loop_time())
        mine = {m["name"]: m["state"] for m in members}
        others = [m["name"] for m in members if not m["self"] and m["state"] != "left"]
        if ask_peers:
            # Only the peers this node believes alive answer; the others keep their last.
            await self.peers.ask_all([n for n in others if mine.get(n) == "alive"], "status")
        views = {node: {**report, "received": at}
                 for (node, op), (at, report) in self.peers.last_good.items()
                 if op == "status" and node in mine}
        lags = lag_by_peer(mesh) if mesh is not None else {}
        names = {m["address"]: m["name"] for m in members}
        traffic: dict[str, dict[str, int]] = {}
        for address, s in self.peer_stats().items():
            row = traffic.setdefault(names.get(address, address), {"sent": 0, "received": 0})
            row["sent"] += int(getattr(s, "bytes_sent", 0))
            row["received"] += int(getattr(s, "bytes_received", 0))
        replication = {}
        for peer in sorted(set(lags) | set(traffic)):
            cursor, behind = lags.get(peer, (None, None))
            replication[peer] = {"cursor": cursor, "behind": behind,
                                 "bytes_sent": traffic.get(peer, {}).get("sent", 0),
                                 "bytes_received": traffic.get(peer, {}).get("received", 0)}
        nodes = {}
        for n in self.replica.list("nodes"):
            nodes[n["metadata"]["name"]] = {"ready": _ready(n)}
        body: dict[str, Any] = {
            "kind": "NodeView", "apiVersion": "shoal.dev/v1alpha1", "node": self.node,
            "time": now, "revision": self.replica.revision,
            "members": members,
            "links": links(self.node, mine, mine, views),
            "views": views,
            "replication": replication,
            "nodes": nodes,
            "pods": pods_per_node(self.replica),
            "membership_events": [e.to_json() for e in self.membership_log.recent(100)],
            "timeline": list(self.timeline.entries)[-100:],
        }
        if self.scopes is not None:
            with contextlib.suppress(Exception):
                body["scopes"] = self.scopes()
        if self.catch_up is not None:
            body["catchUp"] = self.catch_up()
        return body

    # -- HTTP ----------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(PATH, self._status)
        router.add_get(STREAM_PATH, self._stream)
        router.add_get("/ui", self._to_ui)
        router.add_get(UI_PREFIX, self._ui)
        router.add_get(UI_PREFIX + "{file}", self._ui)

    def check(self, request: web.Request) -> None:
        """The API's middleware lets these paths through (``public_prefixes``): a get of
        the path, or a list of nodes, is enough (401 without a credential, else 403)."""
        if self.authenticate is None or self.authorizer is None:
            return
        user = self.authenticate(request)
        by_path = Attributes(user, "get", resource_request=False, path=request.path)
        if self.authorizer.authorize(by_path).allowed:
            return
        nodes = Attributes(user, "list", True, "", "v1", "nodes", path=request.path)
        if self.authorizer.authorize(nodes).allowed:
            return
        authorize(self.authorizer, by_path)

    async def _status(self, request: web.Request) -> web.Response:
        self.check(request)
        ask = request.query.get("peers", "true") not in ("false", "0")
        return json_response(await self.report(ask_peers=ask))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.check(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        last = b""
        last_sent = 0.0
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while True:
                body = await self.report()
                stable = dict(body)
                stable.pop("time", None)
                key = orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)
                now = time.monotonic()
                if key != last or now - last_sent >= 15.0:
                    await resp.write(b"event: status\ndata: " + orjson.dumps(body) + b"\n\n")
                    last, last_sent = key, now
                await asyncio.sleep(self.interval)
        return resp

    async def _to_ui(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(UI_PREFIX)

    async def _ui(self, request: web.Request) -> web.Response:
        name = request.match_info.get("file") or "index.html"
        content_type = _UI_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        data = importlib.resources.files("shoal.api").joinpath("ui", name).read_bytes()
        return web.Response(body=data, content_type=content_type, headers={
            "Cache-Control": "no-cache",
            # Everything comes from this node: no script, style or image from elsewhere.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
        })


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0
