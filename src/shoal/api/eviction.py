"""``POST pods/<name>/eviction``: delete a pod unless a PodDisruptionBudget forbids it.

As Kubernetes' eviction subresource (policy/v1 ``Eviction``): a pod that is
terminal, pending or already being deleted goes at once; otherwise the one budget
that selects it must allow a disruption. Then the budget's ``disruptionsAllowed``
is lowered and the pod is recorded in its ``disruptedPods`` before the pod is
deleted, and the answer is 201. A budget that allows none is ``429
TooManyRequests`` with Kubernetes' message, which ``kubectl drain`` retries.

The budget is read and spent on the peer that serves the request, from its
replica (docs/semantics.md, "Disruption budgets"): two peers that evict in the
same instant, or two sides of a partition, may each spend what they see.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from shoal.api import web
from shoal.api.errors import ApiError
from shoal.api.routing import Target
from shoal.control.disruption import matching_budgets
from shoal.control.pod_state import is_ready
from shoal.store.objects import ObjectStore, now_rfc3339

Admit = Callable[[web.Request, str, Target, dict[str, Any] | None, dict[str, Any] | None], None]

MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
CAUSE = "DisruptionBudget"
MAX_DISRUPTED_PODS = 2000


def _too_many(cause: str) -> ApiError:
    return ApiError(429, MESSAGE, "TooManyRequests", causes=[{"reason": CAUSE, "message": cause}])


def _delete_options(body: dict[str, Any]) -> dict[str, Any]:
    opts = body.get("deleteOptions")
    return opts if isinstance(opts, dict) else {}


async def serve(request: web.Request, t: Target, store: ObjectStore, admit: Admit) -> web.Response:
    if request.method != "POST":
        raise ApiError(405, "the server does not allow this method on the requested resource")
    assert t.name is not None
    from shoal.api.resources import read_checked  # (resources dispatches here)
    body = await read_checked(request, "policy", "Eviction", "CreateOptions")
    if body.get("kind") not in (None, "Eviction") or str(body.get("apiVersion", "policy/v1")) \
            not in ("policy/v1", "policy/v1beta1"):
        raise ApiError(400, f"expected policy/v1 Eviction, got {body.get('apiVersion')} "
                            f"{body.get('kind')}")
    name = (body.get("metadata") or {}).get("name")
    if name and name != t.name:
        raise ApiError(400, "name in URL does not match name in Eviction object")
    ns = t.namespace or "default"
    pod = store.get(t.kind, ns, t.name)
    admit(request, "CREATE", t, body, None)
    opts = _delete_options(body)
    dry_run = bool(opts.get("dryRun")) or bool(request.query.getall("dryRun", []))
    await evict(store, pod, opts, dry_run)
    return web.Response(status=201, content_type="application/json", body=orjson.dumps(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))


async def evict(store: ObjectStore, pod: dict[str, Any], opts: dict[str, Any] | None = None,
                dry_run: bool = False) -> None:
    """Delete ``pod`` if its budget allows, spending from the budget as this replica holds
    it; raise the ApiError Kubernetes answers otherwise."""
    opts = opts or {}
    meta = pod["metadata"]
    ns = meta.get("namespace") or "default"
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed", "Pending") or meta.get("deletionTimestamp"):
        return await _delete(store, pod, opts, dry_run)
    pdb_kind = store.registry.by_kind("policy/v1", "PodDisruptionBudget")
    assert pdb_kind is not None
    budgets = matching_budgets(store.list(pdb_kind, ns), pod)
    if not budgets:
        return await _delete(store, pod, opts, dry_run)
    if len(budgets) > 1:
        raise ApiError(500, "This pod has more than one PodDisruptionBudget, which the eviction "
                            "subresource does not support.")
    pdb = budgets[0]
    status = pdb.get("status") or {}
    policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
    healthy, desired = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
    if not is_ready(pod) and (policy == "AlwaysAllow" or healthy >= desired):
        # An unhealthy pod spends nothing from a budget that is met (or says always).
        return await _delete(store, pod, opts, dry_run)
    pdb_name = pdb["metadata"]["name"]
    if int(status.get("observedGeneration", 0)) < int(pdb["metadata"].get("generation", 1)):
        raise _too_many(f"The disruption budget {pdb_name} is still being processed by the "
                        f"server.")
    allowed = int(status.get("disruptionsAllowed", 0))
    if allowed < 0:
        raise ApiError(403, "pdb disruptions allowed is negative")
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
        raise ApiError(403, "DisruptedPods map too big - too many evictions not confirmed by "
                            "PDB controller")
    if allowed == 0:
        raise _too_many(f"The disruption budget {pdb_name} needs {desired} healthy pods and has "
                        f"{healthy} currently")
    if not dry_run:
        spent = copy.deepcopy(pdb)
        new_status = spent.setdefault("status", {})
        new_status["disruptionsAllowed"] = allowed - 1
        new_status.setdefault("disruptedPods", {})[meta["name"]] = now_rfc3339(
            store.replica.wall.now())
        m = pdb["metadata"]
        await store.update(pdb_kind, spent, m.get("namespace"), m["name"], "status")
    return await _delete(store, pod, opts, dry_run)


async def _delete(store: ObjectStore, pod: dict[str, Any], opts: dict[str, Any],
                  dry_run: bool) -> None:
    pre = opts.get("preconditions") or {}
    grace = opts.get("gracePeriodSeconds")
    m = pod["metadata"]
    pod_kind = store.registry.by_kind("v1", "Pod")
    assert pod_kind is not None
    await store.delete(
        pod_kind, m.get("namespace"), m["name"],
        propagation=opts.get("propagationPolicy"),
        precondition_uid=pre.get("uid"),
        precondition_rv=pre.get("resourceVersion"),
        dry_run=dry_run,
        grace_period=grace if isinstance(grace, int) and not isinstance(grace, bool) else None,
    )
