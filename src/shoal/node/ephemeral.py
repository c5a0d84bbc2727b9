"""Ephemeral containers (``kubectl debug``): started in a running pod once, never restarted.

When a pod's ``spec.ephemeralContainers`` gains an entry (through the
``pods/ephemeralcontainers`` subresource), the pod's worker starts it as it starts any
container, with the pod's environment and volumes: for the process runtime a process
next to the pod's others (the host's namespaces, as the pod's), for runc a container of
its own that joins the pid, ipc and uts namespaces of ``targetContainerName`` when one
is given (``kubectl debug --target``), so that it sees the target's processes. It runs once: when it exits, its status stays terminated;
when the pod terminates it is stopped. Its status is in ``ephemeralContainerStatuses``,
and exec, attach and logs reach it by name like any container.

An ephemeral container that an earlier run of the agent had started is not started
again after a restart (the kubelet does not either): it is reported terminated.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker calls in here; this module only reads and drives it
    from shoal.node.pod_worker import ContainerRecord, PodWorker

STOP_GRACE = 1.0
"""Seconds an ephemeral container gets between SIGTERM and SIGKILL when its pod ends."""


def sync(worker: PodWorker, record: type[ContainerRecord]) -> None:
    """Start the pod's ephemeral containers that have no record yet (once it is running)."""
    if worker.terminating.is_set() or not worker.initialized:
        return
    known = {r.name for r in worker.ephemeral_records}
    for spec in (worker.pod.get("spec") or {}).get("ephemeralContainers") or []:
        if not isinstance(spec, dict) or spec.get("name") in known:
            continue
        rec = record(spec, False, None)
        rec.state = {"waiting": {"reason": "ContainerCreating"}}
        worker.ephemeral_records.append(rec)
        worker.ephemeral_tasks.add(asyncio.ensure_future(_run(worker, rec)))


def restored(worker: PodWorker, record: type[ContainerRecord],
             previous: list[dict[str, Any]]) -> None:
    """Records for the ephemeral containers an earlier run of the agent reported."""
    for st in previous:
        spec = next((c for c in (worker.pod.get("spec") or {}).get("ephemeralContainers") or []
                     if isinstance(c, dict) and c.get("name") == st.get("name")), None)
        if spec is None:
            continue
        rec = record(spec, False, None)
        state = st.get("state") or {}
        rec.state = state if "terminated" in state else {"terminated": {
            "exitCode": 255, "reason": "Unknown", "message": "the node agent restarted"}}
        rec.final = True
        worker.ephemeral_records.append(rec)


async def _run(worker: PodWorker, rec: ContainerRecord) -> None:
    target = rec.spec.get("targetContainerName")
    joined = worker.running_handle(str(target)) if target else None
    rec.join_pid = joined.pid if joined is not None else None
    handle = await worker._start(rec)
    if handle is None:
        rec.final = True
        return
    rec.started = rec.ready = False  # ephemeral containers are never ready (no probes)
    waiter = asyncio.ensure_future(handle.exited.wait())
    term = asyncio.ensure_future(worker.terminating.wait())
    try:
        await asyncio.wait({waiter, term}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        term.cancel()
        if not handle.exited.is_set():
            await worker.ctx.runtime.stop(handle, STOP_GRACE)
        worker._record_exit(rec, handle)
        rec.final = True


def statuses(worker: PodWorker, images: bool) -> list[dict[str, Any]]:
    out = []
    for rec in worker.ephemeral_records:
        st = rec.status(images)
        for key in ("ready", "started"):
            st.pop(key, None)  # the kubelet reports neither for an ephemeral container
        out.append(st)
    return out
