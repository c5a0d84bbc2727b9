"""Priority admission: a pod's ``priorityClassName`` becomes its ``spec.priority``.

A store admission hook, as kube-apiserver's Priority plugin: a named class is
looked up in the serving peer's replica (the two built-in ``system-`` classes are
known even before their objects arrive), its value and ``preemptionPolicy`` are
copied into the pod; a pod naming none gets the ``globalDefault`` class (the
lowest value if several claim it, as after a merge of two sides), or priority 0.
A PriorityClass may be created ``globalDefault`` only if no other one is.
"""

from __future__ import annotations

from typing import Any

from shoal.control.priority_classes import RESOURCE, system_priority_class
from shoal.model.kinds import Kind
from shoal.model.validation.resource_policies import SYSTEM_PRIORITY_CLASSES
from shoal.store.objects import Forbidden
from shoal.store.replica import Replica


class PriorityAdmission:
    """The hook: ``PriorityAdmission(replica)(kind, obj)``."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def _class(self, name: str) -> dict[str, Any] | None:
        found = self.replica.get(RESOURCE, "", name)
        if found is None and name in SYSTEM_PRIORITY_CLASSES:
            return system_priority_class(name)
        return found

    def default_class(self) -> dict[str, Any] | None:
        defaults = [pc for pc in self.replica.list(RESOURCE) if pc.get("globalDefault")]
        return min(defaults, key=lambda pc: (int(pc.get("value", 0)), pc["metadata"]["name"]),
                   default=None)

    def __call__(self, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.resource == RESOURCE:
            self._one_default(obj)
            return
        if kind.kind != "Pod" or kind.group:
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        name = spec.get("priorityClassName")
        pod_name = (obj.get("metadata") or {}).get("name", "")
        if name:
            pc = self._class(str(name))
            if pc is None:
                raise Forbidden(f'pods "{pod_name}" is forbidden: no PriorityClass with name '
                                f"{name} was found")
        else:
            pc = self.default_class()
        value = int(pc.get("value", 0)) if pc is not None else 0
        given = spec.get("priority")
        if given is not None and given != value:
            raise Forbidden(f'pods "{pod_name}" is forbidden: the integer value of priority '
                            f"({given}) must not be provided in pod spec; priority admission "
                            f"controller computed {value} from the given PriorityClass name")
        spec["priority"] = value
        if pc is not None:
            spec["priorityClassName"] = pc["metadata"]["name"]
            spec["preemptionPolicy"] = pc.get("preemptionPolicy") or "PreemptLowerPriority"

    def _one_default(self, obj: dict[str, Any]) -> None:
        if not obj.get("globalDefault"):
            return
        current = self.default_class()
        if current is not None:
            raise Forbidden(f'priorityclasses.scheduling.k8s.io '
                            f'"{(obj.get("metadata") or {}).get("name", "")}" is forbidden: '
                            f"PriorityClass {current['metadata']['name']} is already marked as "
                            "default. Only one default can exist")
