"""``metadata.managedFields``: which manager owns which fields of an object.

Each entry names a manager, its operation (``Apply`` for server-side apply, ``Update`` for
every other write), the apiVersion it wrote, when, the subresource it wrote through, and
its fields as FieldsV1 (:mod:`shoal.model.field_sets`). Two entries are the same manager when
manager, operation and subresource match, and for ``Update`` also the apiVersion (an
applier stays one manager whatever version it applies), as Kubernetes' manager identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.model.field_sets import FieldSet, from_fields_v1, to_fields_v1

APPLY = "Apply"
UPDATE = "Update"
FIELDS_TYPE = "FieldsV1"
MAX_UPDATE_MANAGERS = 10
"""Beyond this many Update managers the oldest are merged into one (Kubernetes' cap)."""
ANCIENT_CHANGES = "ancient-changes"
MAX_MANAGER_LENGTH = 128


@dataclass(frozen=True, order=True)
class ManagerKey:
    manager: str
    operation: str
    api_version: str  # "" for an applier
    subresource: str = ""

    @classmethod
    def of(cls, manager: str, operation: str, api_version: str,
           subresource: str = "") -> ManagerKey:
        return cls(manager, operation, "" if operation == APPLY else api_version, subresource)

    def label(self) -> str:
        """How a conflict names the manager: ``"kubectl-edit" using apps/v1``."""
        out = f'"{self.manager}"'
        if self.subresource:
            out += f' with subresource "{self.subresource}"'
        if self.operation == UPDATE:
            out += f" using {self.api_version}"
        return out


@dataclass(frozen=True)
class Ownership:
    fields: FieldSet
    api_version: str
    time: str | None = None


Managers = dict[ManagerKey, Ownership]


def decode(entries: Any) -> Managers:
    """The managers of a ``managedFields`` list (ValueError when it is not a valid one)."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    out: Managers = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(f"managedFields[{i}] must be an object")
        op = e.get("operation")
        if op not in (APPLY, UPDATE):
            raise ValueError(f"managedFields[{i}].operation: Unsupported value: {op!r}")
        if e.get("fieldsType", FIELDS_TYPE) != FIELDS_TYPE:
            raise ValueError(f"managedFields[{i}].fieldsType: Unsupported value")
        manager, version = e.get("manager", ""), e.get("apiVersion", "")
        sub = e.get("subresource", "")
        if not all(isinstance(x, str) for x in (manager, version, sub)):
            raise ValueError(f"managedFields[{i}]: manager, apiVersion and subresource are strings")
        fields = from_fields_v1(e.get("fieldsV1") or {})
        t = e.get("time")
        key = ManagerKey.of(manager, op, version, sub)
        if key in out:
            raise ValueError(f"managedFields[{i}]: duplicate entry for {key.label()}")
        out[key] = Ownership(fields, version, t if isinstance(t, str) else None)
    return out


def decoded_or_none(entries: Any) -> Managers:
    """The managers of a stored or sent ``managedFields`` list; none when it is not a valid
    one (a write then starts ownership afresh rather than failing)."""
    try:
        return decode(entries)
    except ValueError:
        return {}


def encode(managers: Managers) -> list[dict[str, Any]]:
    """The ``managedFields`` list, in Kubernetes' order: Apply before Update, oldest first,
    then by manager, apiVersion and subresource. Managers that own nothing are left out."""
    def order(item: tuple[ManagerKey, Ownership]) -> tuple[Any, ...]:
        k, o = item
        return (k.operation, o.time or "", k.manager, o.api_version, k.subresource)

    out: list[dict[str, Any]] = []
    for key, own in sorted(managers.items(), key=order):
        if not own.fields:
            continue
        entry: dict[str, Any] = {"manager": key.manager, "operation": key.operation,
                                 "apiVersion": own.api_version}
        if own.time:
            entry["time"] = own.time
        entry["fieldsType"] = FIELDS_TYPE
        entry["fieldsV1"] = to_fields_v1(own.fields)
        if key.subresource:
            entry["subresource"] = key.subresource
        out.append(entry)
    return out


def default_manager(user_agent: str) -> str:
    """The manager of a write that names none: its User-Agent up to the first ``/``
    (``kubectl``, ``Go-http-client``), as Kubernetes derives it."""
    return user_agent.split("/", 1)[0][:MAX_MANAGER_LENGTH]


def cap_updates(managers: Managers, now: str) -> Managers:
    """At most MAX_UPDATE_MANAGERS Update managers: the oldest are merged into one
    ``ancient-changes`` entry."""
    updates = sorted((k for k in managers if k.operation == UPDATE and
                      k.manager != ANCIENT_CHANGES), key=lambda k: managers[k].time or "")
    if len(updates) <= MAX_UPDATE_MANAGERS:
        return managers
    out = dict(managers)
    merged: set[tuple[str, ...]] = set()
    version = ""
    for k in updates[:len(updates) - MAX_UPDATE_MANAGERS + 1]:
        merged |= out.pop(k).fields
        version = k.api_version
    ancient = ManagerKey.of(ANCIENT_CHANGES, UPDATE, version)
    prior = out.get(ancient)
    out[ancient] = Ownership(frozenset(merged) | (prior.fields if prior else frozenset()),
                             version, now)
    return out
