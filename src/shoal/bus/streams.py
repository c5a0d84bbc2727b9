"""Stream and Consumer objects made real in this site's JetStream, and their status.

Every bus peer runs a :class:`StreamReconciler` against its own nats-server, from its own
replica, so a site creates its streams also while it is cut off from the rest. A pass
creates what is missing, updates what differs (a change JetStream refuses, such as the
storage type, is reported in the object's Ready condition), and deletes the streams and
consumers that this peer once created for objects that are gone (a stream an application
made for itself is never touched). The first bus peer of the site by name writes the
status back, at most every ``status_interval`` seconds and only when it changed:
messages held and, for a stream with sources, how far it lags behind them (and how far
it got in each), under ``status.sites.<site>`` and, summed or for its own site, in
``status.messages`` and ``status.lag``; ``status.held`` per site; and for a stream that
another site sources, ``status.hubLag``: how many of its messages that site does not hold
yet (the columns of ``kubectl get streams``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.bus import import_nats, stream_objects
from shoal.bus.site_topology import SiteTopology
from shoal.store.objects import ObjectStore, StoreError, now_rfc3339

import_nats()  # before nats-py's own imports: without aiohttp

import nats  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.js.api import ConsumerConfig, StreamConfig, StreamInfo  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402
from nats.js.manager import JetStreamManager  # noqa: E402

log = logging.getLogger(__name__)

_NORMAL_KEYS = ("subjects", "retention", "storage", "max_bytes", "max_msgs", "max_msg_size",
                "max_msgs_per_subject", "max_consumers", "discard", "no_ack", "max_age",
                "num_replicas", "description", "duplicate_window", "sources", "mirror")


def _plain(value: Any) -> Any:
    """Enums to their values, recursively, so JSON from either side compares equal."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def stream_differs(want: Mapping[str, Any], have: StreamConfig) -> list[str]:
    """The keys of ``want`` whose value the running stream does not have."""
    current = _plain(have.as_dict())
    out = []
    for key in _NORMAL_KEYS:
        if key not in want and key not in ("sources", "mirror"):
            continue
        w, h = _plain(want.get(key)), current.get(key)
        if key in ("sources", "subjects"):
            w, h = w or [], h or []
            if key == "sources":
                h = [{k: v for k, v in s.items() if v not in (None, "", 0)} for s in h]
                h = [{**s, "external": {k: v for k, v in s["external"].items() if v}}
                     if s.get("external") else s for s in h]
        if w != h:
            out.append(key)
    return out


class StreamReconciler:
    def __init__(self, store: ObjectStore, url: str | Callable[[], str], node_name: str,
                 topology: Callable[[], SiteTopology | None], state_file: Path,
                 poll: float = 1.0, resync: float = 30.0, status_interval: float = 10.0
                 ) -> None:
        self.store = store
        self.url = url
        self.node_name = node_name
        self.topology = topology
        self.state_file = state_file
        self.poll = poll
        self.resync = resync
        self.status_interval = status_interval
        self.passes = 0
        self._managed = self._load_managed()
        self._problems: dict[tuple[str, str, str], str] = {}
        self._nc: Client | None = None

    # -- what this peer created ----------------------------------------------------

    def _load_managed(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.state_file.read_text())
            return {"streams": list(data.get("streams", [])),
                    "consumers": list(data.get("consumers", []))}
        except (OSError, ValueError):
            return {"streams": [], "consumers": []}

    def _save_managed(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._managed, sort_keys=True))
        tmp.replace(self.state_file)

    def _manage(self, what: str, name: str) -> None:
        if name not in self._managed[what]:
            self._managed[what].append(name)
            self._save_managed()

    def _unmanage(self, what: str, name: str) -> None:
        if name in self._managed[what]:
            self._managed[what].remove(name)
            self._save_managed()

    # -- the loop ----------------------------------------------------------------

    def _objects(self, resource: str, site: str) -> list[dict[str, Any]]:
        objs = [o for o in self.store.replica.list(resource)
                if stream_objects.belongs_to(o, site)
                and not (o.get("metadata") or {}).get("deletionTimestamp")]
        if resource != stream_objects.CONSUMERS:
            return objs
        # A consumer lives where its stream does: an unplaced Consumer of a Stream placed
        # at another site is not this site's to create (nor to report as failing).
        elsewhere = {stream_objects.stream_name(o)
                     for o in self.store.replica.list(stream_objects.STREAMS)
                     if not stream_objects.belongs_to(o, site)}
        return [o for o in objs
                if str((o.get("spec") or {}).get("streamName", "")) not in elsewhere]

    def _revision(self) -> tuple[int, int]:
        r = self.store.replica
        return (r.resource_revision(stream_objects.STREAMS),
                r.resource_revision(stream_objects.CONSUMERS))

    async def run(self) -> None:
        last_rev: tuple[Any, ...] | None = None
        last_pass = last_status = 0.0
        while True:
            try:
                url = self.url() if callable(self.url) else self.url
                if self._nc is not None and not self._nc.is_closed and \
                        self._nc.connected_url is not None and \
                        not url.endswith(f":{self._nc.connected_url.port}"):
                    await self._nc.close()  # the bus moved to another port
                if self._nc is None or self._nc.is_closed:
                    self._nc = await nats.connect(
                        url, name=f"shoal-streams-{self.node_name}",
                        max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                        connect_timeout=2, error_cb=_connection_error)
                topo = self.topology()
                now = time.monotonic()
                # The objects changed, or this node's site did (a kubectl label).
                rev = (*self._revision(), topo.site if topo else None,
                       topo.site_peers if topo else ())
                if topo is not None and (rev != last_rev or now - last_pass >= self.resync):
                    await self.reconcile(self._nc.jsm(), topo)
                    last_rev, last_pass = rev, now
                if topo is not None and now - last_status >= self.status_interval:
                    await self.write_status(self._nc.jsm(), topo)
                    last_status = now
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the server restarting, JetStream without a leader...
                log.info("bus streams: pass failed, trying again: %s", e)
                last_rev = None
                await asyncio.sleep(min(self.resync, 2.0))
            await asyncio.sleep(self.poll)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # -- a pass --------------------------------------------------------------------

    async def reconcile(self, jsm: JetStreamManager, topo: SiteTopology) -> None:
        self.passes += 1
        streams = self._objects(stream_objects.STREAMS, topo.site)
        wanted: dict[str, dict[str, Any]] = {}
        for obj in sorted(streams, key=_age_key):
            name = stream_objects.stream_name(obj)
            key = _key(obj)
            if name in wanted:
                self._problems[key] = f"another Stream already names JetStream stream {name}"
                continue
            wanted[name] = obj
            self._problems[key] = await self._ensure_stream(jsm, obj, len(topo.site_peers))
        for name in list(self._managed["streams"]):
            if name not in wanted:
                with contextlib.suppress(NotFoundError):
                    await jsm.delete_stream(name)
                log.info("bus: deleted stream %s (its Stream is gone)", name)
                self._unmanage("streams", name)
        consumers = self._objects(stream_objects.CONSUMERS, topo.site)
        present: set[str] = set()
        for obj in consumers:
            stream = str((obj.get("spec") or {}).get("streamName", ""))
            ident = f"{stream}/{stream_objects.consumer_name(obj)}"
            present.add(ident)
            self._problems[_key(obj)] = await self._ensure_consumer(jsm, obj, stream, ident,
                                                                    stream in wanted)
        for ident in list(self._managed["consumers"]):
            if ident not in present:
                stream, _, durable = ident.partition("/")
                with contextlib.suppress(NotFoundError):
                    await jsm.delete_consumer(stream, durable)
                self._unmanage("consumers", ident)

    async def _ensure_stream(self, jsm: JetStreamManager, obj: dict[str, Any],
                             site_peers: int) -> str:
        want = stream_objects.stream_config(obj, site_peers)
        name = want["name"]
        try:
            try:
                info = await jsm.stream_info(name)
            except NotFoundError:
                await jsm.add_stream(StreamConfig.from_response(copy.deepcopy(want)))
                log.info("bus: created stream %s", name)
                self._manage("streams", name)
                return ""
            self._manage("streams", name)
            differs = stream_differs(want, info.config)
            if differs:
                await jsm.update_stream(StreamConfig.from_response(copy.deepcopy(want)))
                log.info("bus: updated stream %s (%s)", name, ", ".join(differs))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, (TimeoutError, nats.errors.TimeoutError)):
                raise  # JetStream not answering: the whole pass is tried again
            return f"JetStream refused stream {name}: {e}"
        return ""

    async def _ensure_consumer(self, jsm: JetStreamManager, obj: dict[str, Any], stream: str,
                               ident: str, stream_wanted: bool) -> str:
        want = stream_objects.consumer_config(obj)
        try:
            try:
                info = await jsm.consumer_info(stream, want["durable_name"])
            except NotFoundError:
                if not stream_wanted:
                    with contextlib.suppress(NotFoundError):
                        await jsm.stream_info(stream)
                await jsm.add_consumer(stream, ConsumerConfig.from_response(copy.deepcopy(want)))
                log.info("bus: created consumer %s", ident)
                self._manage("consumers", ident)
                return ""
            self._manage("consumers", ident)
            have = _plain(info.config.as_dict())
            if any(_plain(v) != have.get(k) for k, v in want.items()):
                await jsm.add_consumer(stream, ConsumerConfig.from_response(copy.deepcopy(want)))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if isinstance(e, (TimeoutError, nats.errors.TimeoutError)):
                raise
            return f"JetStream refused consumer {ident}: {e}"
        return ""

    # -- status --------------------------------------------------------------------

    async def write_status(self, jsm: JetStreamManager, topo: SiteTopology) -> int:
        """Write the status of this site's streams and consumers (only on the site's first
        peer); returns how many objects were written."""
        if not topo.site_peers or topo.site_peers[0] != self.node_name:
            return 0
        written = 0
        reg = self.store.registry
        stream_kind = reg.by_resource(stream_objects.GROUP, stream_objects.VERSION, "streams")
        consumer_kind = reg.by_resource(stream_objects.GROUP, stream_objects.VERSION,
                                        "consumers")
        for obj in self._objects(stream_objects.STREAMS, topo.site):
            try:
                info = await jsm.stream_info(stream_objects.stream_name(obj))
            except NotFoundError:
                info = None
            site_status = _stream_site_status(info)
            if site_status is not None and info is not None and info.sources:
                site_status["sources"] = await self._copied(jsm, obj, info)
            stream_status = _stream_status(obj, topo.site, site_status,
                                           self._problems.get(_key(obj), ""))
            hub_lag = self._hub_lag(obj, topo.site, site_status)
            if hub_lag is not None:
                stream_status["hubLag"] = hub_lag
            if stream_kind is not None and await self._write(stream_kind, obj, stream_status):
                written += 1
        for obj in self._objects(stream_objects.CONSUMERS, topo.site):
            stream = str((obj.get("spec") or {}).get("streamName", ""))
            status: dict[str, Any] = {}
            try:
                cinfo = await jsm.consumer_info(stream, stream_objects.consumer_name(obj))
                status = {"pending": cinfo.num_pending or 0,
                          "ackPending": cinfo.num_ack_pending or 0,
                          "redelivered": cinfo.num_redelivered or 0}
            except NotFoundError:
                pass
            status["conditions"] = [_ready(obj, bool(status),
                                           self._problems.get(_key(obj), ""))]
            if consumer_kind is not None and await self._write(consumer_kind, obj, status):
                written += 1
        return written

    async def _copied(self, jsm: JetStreamManager, obj: Mapping[str, Any], info: StreamInfo
                      ) -> dict[str, dict[str, int]]:
        """Per source of a stream (``name@domain``): its lag as JetStream reports it and
        the last sequence of the source stream this one holds (from the
        ``Nats-Stream-Source`` header of the newest message with the source's subjects)."""
        out: dict[str, dict[str, int]] = {}
        lags: dict[str, list[int]] = {}
        for si in info.sources or []:
            lags.setdefault(si.name, []).append(int(si.lag or 0))
        for src in (obj.get("spec") or {}).get("sources") or []:
            name, domain = str(src.get("name", "")), str(src.get("domain") or "")
            entry: dict[str, int] = {}
            if len(lags.get(name, [])) == 1:
                entry["lag"] = lags[name][0]
            copied = 0
            for subject in self._source_subjects(src):
                with contextlib.suppress(NotFoundError, nats.js.errors.APIError):
                    msg = await jsm.get_last_msg(stream_objects.stream_name(obj), subject)
                    origin, seq = source_header(msg.headers or {})
                    if origin == name:
                        copied = max(copied, seq)
            entry["copiedSeq"] = copied
            out[f"{name}@{domain}"] = entry
        return out

    def _source_subjects(self, src: Mapping[str, Any]) -> list[str]:
        """The subjects a source brings: its filter, or its Stream object's subjects."""
        if src.get("filterSubject"):
            return [str(src["filterSubject"])]
        domain = src.get("domain")
        for o in self.store.replica.list(stream_objects.STREAMS):
            if stream_objects.stream_name(o) == src.get("name") and (
                    domain is None or stream_objects.belongs_to(o, str(domain))):
                return [str(x) for x in (o.get("spec") or {}).get("subjects") or []]
        return []

    def _hub_lag(self, obj: Mapping[str, Any], site: str,
                 mine: Mapping[str, Any] | None) -> int | None:
        """How many of this site's messages of the stream the streams sourcing it from
        another site (the hub's) do not hold yet, from what they last reported: during a
        cut it grows with every message stored here. None when nothing sources it."""
        if mine is None:
            return None
        key = f"{stream_objects.stream_name(obj)}@{site}"
        copied: list[int] = []
        for other in self.store.replica.list(stream_objects.STREAMS):
            sources = (other.get("spec") or {}).get("sources") or []
            if not any(f"{s.get('name')}@{s.get('domain') or ''}" == key for s in sources):
                continue
            for there, st in ((other.get("status") or {}).get("sites") or {}).items():
                entry = ((st or {}).get("sources") or {}).get(key) if there != site else None
                if isinstance(entry, dict):
                    copied.append(int(entry.get("copiedSeq", 0)))
        if not copied:
            return None
        last, first = int(mine.get("lastSeq", 0)), int(mine.get("firstSeq", 0))
        return max(0, last - max(min(copied), first - 1))

    async def _write(self, kind: Any, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        old = obj.get("status") or {}
        merged = {**status}
        if "sites" in status:
            merged["sites"] = {**(old.get("sites") or {}), **status["sites"]}
        if _comparable(old) == _comparable(merged):
            return False
        for cond in merged.get("conditions") or []:
            before = next((c for c in old.get("conditions") or []
                           if c.get("type") == cond["type"]), None)
            if before is not None and before.get("status") == cond["status"]:
                cond["lastTransitionTime"] = before.get("lastTransitionTime")
        meta = obj["metadata"]
        new = copy.deepcopy(obj)
        new["status"] = {**merged, "observedGeneration": meta.get("generation", 1)}
        try:
            await self.store.update(kind, new, meta.get("namespace"), meta["name"], "status",
                                    check_rv=False)
        except StoreError as e:
            log.debug("bus: status of %s/%s: %s", meta.get("namespace"), meta["name"], e)
            return False
        return True


async def _connection_error(e: Exception) -> None:
    # nats-py logs every failed try with a traceback; a restarting server is routine here.
    log.debug("bus streams: connection to nats-server: %s", e)


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def _age_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """Two objects naming one JetStream stream: the older keeps it."""
    meta = obj.get("metadata") or {}
    return (str(meta.get("creationTimestamp", "")), str(meta.get("namespace", "")),
            str(meta.get("name", "")))


def _stream_site_status(info: StreamInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    state = info.state
    lag = sum(int(s.lag or 0) for s in info.sources or [])
    if info.mirror is not None:
        lag += int(info.mirror.lag or 0)
    return {"messages": int(state.messages or 0), "bytes": int(state.bytes or 0),
            "firstSeq": int(state.first_seq or 0), "lastSeq": int(state.last_seq or 0),
            "lag": lag}


def source_header(headers: Mapping[str, str]) -> tuple[str, int]:
    """(source stream, its sequence) from a sourced message's ``Nats-Stream-Source``
    header (``"sensors-farm-a:Ab12cD 42"``); ("", 0) when there is none."""
    parts = str(headers.get("Nats-Stream-Source", "")).split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "", 0
    return parts[0].split(":", 1)[0], int(parts[1])


def _ready(obj: Mapping[str, Any], exists: bool, problem: str) -> dict[str, Any]:
    if problem:
        return {"type": "Ready", "status": "False", "reason": "Errored", "message": problem,
                "lastTransitionTime": now_rfc3339(time.time())}
    if not exists:
        return {"type": "Ready", "status": "False", "reason": "Pending",
                "message": "not created in JetStream yet",
                "lastTransitionTime": now_rfc3339(time.time())}
    return {"type": "Ready", "status": "True", "reason": "Created",
            "message": f"{obj.get('kind', 'Object')} successfully created",
            "lastTransitionTime": now_rfc3339(time.time())}


def _stream_status(obj: Mapping[str, Any], site: str, mine: dict[str, Any] | None,
                   problem: str) -> dict[str, Any]:
    sites = dict((obj.get("status") or {}).get("sites") or {})
    if mine is not None:
        sites[site] = mine
    if stream_objects.placed_site(obj) == site:
        shown = [mine] if mine is not None else []
    else:
        shown = [s for s in sites.values() if isinstance(s, dict)]
    held = " ".join(f"{name}={int(s.get('messages', 0))}"
                    for name, s in sorted(sites.items()) if isinstance(s, dict))
    return {"sites": {site: mine} if mine is not None else {},
            "messages": sum(int(s.get("messages", 0)) for s in shown),
            "lag": sum(int(s.get("lag", 0)) for s in shown),
            "held": held,
            "conditions": [_ready(obj, mine is not None, problem)]}


def _comparable(status: Mapping[str, Any]) -> Any:
    """A status without its timestamps, to write only what changed."""
    out = copy.deepcopy(dict(status))
    out.pop("observedGeneration", None)
    for cond in out.get("conditions") or []:
        cond.pop("lastTransitionTime", None)
    if "sites" in out and isinstance(out["sites"], dict):
        out["sites"] = {k: v for k, v in out["sites"].items() if v}
    return out
