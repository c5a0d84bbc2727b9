"""Streaming watch: newline-delimited JSON events from the local change feed.

Semantics follow the apiserver: without a resourceVersion (or with "0") the
stream starts with a synthetic ADDED event per existing object; with one, it
replays the changes after it, or sends a 410 ERROR event if they were
compacted. An object that stops matching a label or field selector is sent as
DELETED, one that starts matching as ADDED.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from typing import Any

import orjson

from shoal.api import web
from shoal.api.errors import status_body
from shoal.api.served_versions import to_served
from shoal.api.tables import build_table
from shoal.model.kinds import Kind
from shoal.model.selectors import FieldSelector, LabelSelector
from shoal.store.change_feed import Change, Expired
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any]], dict[str, Any]]
INITIAL_BATCH = 100
"""Initial ADDED events written between two yields to the other requests."""
REVISION_WAIT = 3.0
"""Seconds a read that needs a revision this node has not reached waits for it, as the
apiserver's watch cache waits for etcd's (``blockTimeout``) before it answers 504."""
RETRY_AFTER_SECONDS = 1
"""What that 504 tells the client to wait before it retries (``Retry-After``)."""


async def caught_up(replica: Replica, revision: int) -> bool:
    """Whether the replica reaches ``revision`` within ``REVISION_WAIT`` seconds (at once
    when it already has: no wait, no subscription)."""
    if replica.revision >= revision:
        return True
    # Revisions are published in order, so the first change at or past it is enough.
    sub = replica.subscribe(lambda c: c.rv >= revision)
    try:
        async with asyncio.timeout(REVISION_WAIT):
            await sub.queue.get()
    except TimeoutError:
        pass
    finally:
        sub.close()
    # (a revision a rolled-back write took is never published: the check is the replica's)
    return replica.revision >= revision


def too_large_status(revision: int, current: int) -> dict[str, Any]:
    """The apiserver's Status for a read at a revision it has not reached in time
    (``storage.NewTooLargeResourceVersionError``): client-go's reflector recognizes it by
    its cause and relists from the latest state."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"Timeout: Too large resource version: {revision}, current: {current}",
            "reason": "Timeout",
            "details": {"causes": [{"reason": "ResourceVersionTooLarge",
                                    "message": "Too large resource version"}],
                        "retryAfterSeconds": RETRY_AFTER_SECONDS},
            "code": 504}


def too_large_response(revision: int, current: int) -> web.Response:
    """:func:`too_large_status` as a list's or a get's answer, with ``Retry-After`` (on a
    5xx with it, client-go retries the request itself)."""
    return web.Response(status=504, body=orjson.dumps(too_large_status(revision, current)),
                        content_type="application/json",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _matches(obj: dict[str, Any] | None, labels: LabelSelector, fields: FieldSelector) -> bool:
    if obj is None:
        return False
    meta = obj.get("metadata") or {}
    return labels.matches(meta.get("labels") or {}) and fields.matches(obj)


def translate(change: Change, labels: LabelSelector, fields: FieldSelector) -> str | None:
    """The event type a watcher with these selectors should see, or None."""
    now = _matches(change.obj, labels, fields)
    before = _matches(change.old, labels, fields)
    if change.type == "DELETED":
        return "DELETED" if before else None
    if change.type == "ADDED":
        return "ADDED" if now else None
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    if before:
        return "DELETED"
    return None


class WatchStream:
    """One client's watch."""

    def __init__(
        self,
        request: web.Request,
        replica: Replica,
        kind: Kind,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        resource_version: str | None,
        timeout: float,
        bookmarks: bool,
        bookmark_interval: float,
        send_initial_events: bool,
        as_table: bool,
        include_object: str,
    ) -> None:
        self.request = request
        self.replica = replica
        self.kind = kind
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.rv_param = resource_version
        self.timeout = timeout
        self.bookmarks = bookmarks
        self.bookmark_interval = bookmark_interval
        self.send_initial_events = send_initial_events
        self.as_table = as_table
        self.include_object = include_object
        self._first_table = True

    def _accept(self, c: Change) -> bool:
        if c.resource != self.kind.resource:
            return False
        return self.namespace is None or c.namespace == self.namespace

    def _encode(self, etype: str, obj: dict[str, Any]) -> bytes:
        if self.as_table and etype in ("ADDED", "MODIFIED", "DELETED"):
            table = build_table(
                self.kind, [obj], now=datetime.datetime.now(datetime.UTC),
                include_object=self.include_object,
            )
            if not self._first_table:
                table["columnDefinitions"] = []
            self._first_table = False
            obj = table
        elif etype != "ERROR":
            obj = to_served(self.kind, obj)  # autoscaling/v1 (issue 12)
        return orjson.dumps({"type": etype, "object": obj}) + b"\n"

    def _bookmark(self, rv: int, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    async def run(self) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.headers["Cache-Control"] = "no-cache, private"
        resp.enable_chunked_encoding()
        rv_param = self.rv_param
        if self.send_initial_events and rv_param and rv_param.isascii() and rv_param.isdigit():
            # A watch list "not older than" a revision this node has not reached waits for
            # it, then ends with the apiserver's ERROR (its watch cache, blockTimeout);
            # without sendInitialEvents, as there, the watch starts and waits for events.
            want = int(rv_param)
            if not await caught_up(self.replica, want):
                await resp.prepare(self.request)
                await resp.write(orjson.dumps({"type": "ERROR", "object": too_large_status(
                    want, self.replica.revision)}) + b"\n")
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await resp.write_eof()
                return resp
        # Subscribe before reading the backlog so nothing falls in between.
        sub = self.replica.subscribe(self._accept)
        try:
            await resp.prepare(self.request)
            start_rv: int
            # The objects as of start_rv (the replica replaces values, never changes one),
            # encoded one by one as they are written: a watch that starts over thousands
            # of objects does not hold all their events at once.
            initial: list[dict[str, Any]] = []
            if rv_param in (None, "", "0") or self.send_initial_events:
                start_rv = self.replica.revision
                objs = self.replica.list(self.kind.resource, self.namespace)
                initial = [o for o in objs if _matches(o, self.labels, self.fields)]
                backlog: list[Change] = []
            else:
                assert rv_param is not None
                try:
                    start_rv = int(rv_param)
                except ValueError:
                    await resp.write(self._error(400, f"invalid resourceVersion {rv_param!r}",
                                                 "BadRequest"))
                    return resp
                try:
                    backlog = self.replica.feed.since(start_rv, self._accept)
                except Expired as e:
                    await resp.write(self._error(410, str(e), "Expired"))
                    return resp
            for i, o in enumerate(initial):
                await resp.write(self._encode("ADDED", o))
                if i % INITIAL_BATCH == INITIAL_BATCH - 1:
                    await asyncio.sleep(0)  # let other requests in
            if self.send_initial_events:
                await resp.write(self._bookmark(start_rv, initial_end=True))
            last_rv = start_rv
            for c in backlog:
                last_rv = await self._send(resp, c, last_rv)
            # Drop queued changes the backlog or the initial list already covered.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if self.bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    async with asyncio.timeout(wait):
                        c = await sub.queue.get()
                except TimeoutError:
                    if self.bookmarks and loop.time() >= next_bookmark:
                        await resp.write(self._bookmark(max(last_rv, self.replica.revision)))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if c is None:
                    break  # the feed dropped a watcher that fell too far behind
                last_rv = await self._send(resp, c, last_rv)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    async def _send(self, resp: web.StreamResponse, c: Change, last_rv: int) -> int:
        if c.rv <= last_rv:
            return last_rv
        etype = translate(c, self.labels, self.fields)
        if etype is not None:
            await resp.write(self._encode(etype, c.obj))
        return c.rv

    def _error(self, code: int, message: str, reason: str) -> bytes:
        return orjson.dumps({"type": "ERROR", "object": status_body(code, message, reason)}) + b"\n"
