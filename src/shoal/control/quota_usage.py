"""What objects use of a ResourceQuota, and whether a new one fits (Kubernetes' quota evaluators).

Pure functions over objects, shared by the admission on every peer
(:mod:`shoal.api.quota_admission`) and the status controller
(:mod:`shoal.control.resource_quota`). Amounts are integers: millicores for CPU,
whole units for everything else, rounded up as ``Quantity.MilliValue()`` and
``Value()`` round. A pod counts while it is neither terminal (Succeeded, Failed)
nor being deleted, as ``QuotaV1Pod``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shoal.control.scheduler.resources import CPU, MEMORY, pod_requests, quantity_value

Usage = dict[str, int]

_CPU_NAMES = ("cpu", "requests.cpu", "limits.cpu")
# Object counts Kubernetes also names without ``count/`` (core/v1 only).
_LEGACY_COUNTS = {"services": "services", "configmaps": "configmaps", "secrets": "secrets",
                  "persistentvolumeclaims": "persistentvolumeclaims",
                  "replicationcontrollers": "replicationcontrollers",
                  "resourcequotas": "resourcequotas"}


def amount(name: str, raw: Any) -> int:
    """A quota resource's amount as an integer (millicores for the CPU ones)."""
    return quantity_value(CPU if name in _CPU_NAMES else name, raw)


def format_amount(name: str, value: int) -> str:
    """An amount as Kubernetes prints a Quantity: ``500m``, ``2``, ``128Mi``, ``10``."""
    if name in _CPU_NAMES:
        return str(value // 1000) if value % 1000 == 0 else f"{value}m"
    for suffix, size in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30),
                         ("Mi", 2**20), ("Ki", 2**10)):
        if value and value % size == 0:
            return f"{value // size}{suffix}"
    return str(value)


def pod_counts(pod: Mapping[str, Any]) -> bool:
    """Whether a pod still uses its quota: not terminal, not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get(
        "deletionTimestamp")


def _container_lists(spec: Mapping[str, Any], which: str) -> Iterable[Mapping[str, Any]]:
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, Mapping):
                res = c.get("resources") or {}
                yield (res.get(which) or {}) if isinstance(res, Mapping) else {}


def _effective_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """Requests, a missing one taken from the limit (what defaulting will store)."""
    spec = dict(pod.get("spec") or {})
    for key in ("containers", "initContainers"):
        items = []
        for c in spec.get(key) or []:
            if not isinstance(c, Mapping):
                continue
            res = dict(c.get("resources") or {})
            requests = dict(res.get("limits") or {}) | dict(res.get("requests") or {})
            items.append(dict(c) | {"resources": res | {"requests": requests}})
        spec[key] = items
    return pod_requests({"spec": spec})


def _pod_limits(pod: Mapping[str, Any]) -> dict[str, int]:
    spec = pod.get("spec") or {}
    as_requests = {"spec": {key: [{"resources": {"requests": (c.get("resources") or {}).get(
        "limits") or {}}, "restartPolicy": c.get("restartPolicy")}
        for c in spec.get(key) or [] if isinstance(c, Mapping)]
        for key in ("containers", "initContainers")} | {"overhead": spec.get("overhead")}}
    return pod_requests(as_requests)


def object_usage(resource: str, obj: Mapping[str, Any]) -> Usage:
    """What one object of ``resource`` (``plural.group``) counts against a quota."""
    usage: Usage = {f"count/{resource}": 1}
    if resource in _LEGACY_COUNTS:
        usage[_LEGACY_COUNTS[resource]] = 1
    if resource == "pods":
        if not pod_counts(obj):
            return {}
        usage["pods"] = 1
        requests, limits = _effective_requests(obj), _pod_limits(obj)
        for name in (CPU, MEMORY, "ephemeral-storage"):
            if name in requests:
                usage[f"requests.{name}"] = requests[name]
                usage[name] = requests[name]
            if name in limits:
                usage[f"limits.{name}"] = limits[name]
    elif resource == "services":
        usage.update(_service_usage(obj))
    elif resource == "persistentvolumeclaims":
        storage = ((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}
        if "storage" in storage:
            usage["requests.storage"] = quantity_value("storage", storage["storage"])
    return usage


def _service_usage(svc: Mapping[str, Any]) -> Usage:
    """``services.nodeports`` and ``services.loadbalancers``, as Kubernetes' service evaluator:
    a NodePort or LoadBalancer Service uses a node port per port (a LoadBalancer that
    allocates none only those it names)."""
    spec = svc.get("spec") or {}
    ports = [p for p in spec.get("ports") or [] if isinstance(p, Mapping)]
    kind = spec.get("type")
    if kind == "NodePort":
        return {"services.nodeports": len(ports)}
    if kind != "LoadBalancer":
        return {}
    if spec.get("allocateLoadBalancerNodePorts") is False:
        return {"services.loadbalancers": 1,
                "services.nodeports": sum(1 for p in ports if p.get("nodePort"))}
    return {"services.loadbalancers": 1, "services.nodeports": len(ports)}


def _best_effort(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return not any(lst for which in ("requests", "limits")
                   for lst in _container_lists(spec, which))


def _scope_matches(scope: str, operator: str, values: list[str], pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    if scope == "Terminating":
        match = spec.get("activeDeadlineSeconds") is not None
    elif scope == "NotTerminating":
        match = spec.get("activeDeadlineSeconds") is None
    elif scope == "BestEffort":
        match = _best_effort(pod)
    elif scope == "NotBestEffort":
        match = not _best_effort(pod)
    elif scope == "PriorityClass":
        name = spec.get("priorityClassName")
        if operator == "Exists":
            return bool(name)
        if operator == "DoesNotExist":
            return not name
        inside = name in values
        return inside if operator == "In" else not inside
    else:
        return False
    return match if operator != "DoesNotExist" else not match


def quota_matches(quota: Mapping[str, Any], resource: str, obj: Mapping[str, Any]) -> bool:
    """Whether ``quota``'s scopes select the object (scopes select pods only)."""
    spec = quota.get("spec") or {}
    scopes: list[tuple[str, str, list[str]]] = [(s, "Exists", []) for s in spec.get("scopes") or [] if isinstance(s, str)]
    for expr in ((spec.get("scopeSelector") or {}).get("matchExpressions") or []):
        if isinstance(expr, Mapping):
            scopes.append((str(expr.get("scopeName")), str(expr.get("operator", "Exists")),
                           [str(v) for v in expr.get("values") or []]))
    if not scopes:
        return True
    if resource != "pods":
        return False
    return all(_scope_matches(s, op, values, obj) for s, op, values in scopes)


def hard_of(quota: Mapping[str, Any]) -> Usage:
    return {str(k): amount(str(k), v) for k, v in ((quota.get("spec") or {}).get("hard")
                                                  or {}).items()}


def usage_of(quota: Mapping[str, Any], objects: Mapping[str, list[dict[str, Any]]]) -> Usage:
    """What the objects (by resource) of the quota's namespace use of its hard resources."""
    hard = hard_of(quota)
    used = dict.fromkeys(hard, 0)
    for resource, items in objects.items():
        for obj in items:
            if not quota_matches(quota, resource, obj):
                continue
            for name, value in object_usage(resource, obj).items():
                if name in used:
                    used[name] += value
    return used


def resources_counted(quotas: Iterable[Mapping[str, Any]]) -> set[str]:
    """The resources (``plural.group``) whose objects the quotas count."""
    out: set[str] = set()
    for q in quotas:
        for name in hard_of(q):
            if name.startswith("count/"):
                out.add(name.removeprefix("count/"))
            elif name in _LEGACY_COUNTS:
                out.add(name)
            elif name.startswith("services."):
                out.add("services")
            elif name == "requests.storage":
                out.add("persistentvolumeclaims")
            else:
                out.add("pods")
    return out


def _printed(names: Iterable[str], values: Mapping[str, int]) -> str:
    return ",".join(f"{n}={format_amount(n, values.get(n, 0))}" for n in sorted(names))


def missing_values(quota: Mapping[str, Any], pod: Mapping[str, Any]) -> str | None:
    """``must specify ...`` for a pod whose containers leave a constrained compute resource unset."""
    hard = hard_of(quota)
    missing: list[str] = []
    for name in sorted(hard):
        which, _, res = name.rpartition(".")
        which = which or "requests"
        if res not in (CPU, MEMORY) or which not in ("requests", "limits"):
            continue
        lacking = []
        for c in (pod.get("spec") or {}).get("containers") or []:
            if not isinstance(c, Mapping):
                continue
            r = c.get("resources") or {}
            values = dict(r.get("limits") or {}) if which == "limits" else \
                dict(r.get("limits") or {}) | dict(r.get("requests") or {})
            if res not in values:
                lacking.append(str(c.get("name", "")))
        if lacking:
            missing.append(f"{name} for: {','.join(lacking)}")
    return "; ".join(missing) or None


def exceeded(quota: Mapping[str, Any], used: Mapping[str, int], request: Mapping[str, int]) -> \
        str | None:
    """Kubernetes' ``exceeded quota`` message if ``request`` on top of ``used`` passes ``hard``."""
    hard = hard_of(quota)
    asked = {n: v for n, v in request.items() if n in hard}
    over = [n for n, v in asked.items() if used.get(n, 0) + v > hard[n]]
    if not over:
        return None
    name = (quota.get("metadata") or {}).get("name", "")
    return (f"exceeded quota: {name}, requested: {_printed(over, asked)}, "
            f"used: {_printed(over, used)}, limited: {_printed(over, hard)}")

