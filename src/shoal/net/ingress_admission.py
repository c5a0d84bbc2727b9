"""DefaultIngressClass admission: an Ingress created without a class gets the default one.

As Kubernetes' admission plugin: on create only, when the Ingress names no class (neither
``spec.ingressClassName`` nor the old ``kubernetes.io/ingress.class`` annotation), it gets
the IngressClass annotated ``ingressclass.kubernetes.io/is-default-class: "true"``; of
several, the newest (then the first by name, so that every peer picks the same one).
"""

from __future__ import annotations

from typing import Any

from shoal.model.kinds import Kind
from shoal.net.ingress_config import DEFAULT_CLASS_ANNOTATION
from shoal.store.replica import Replica

CLASSES = "ingressclasses.networking.k8s.io"
LEGACY_ANNOTATION = "kubernetes.io/ingress.class"


class DefaultIngressClass:
    """A store admission hook (``ObjectStore.admission``)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def default(self) -> str | None:
        defaults = [c.get("metadata") or {} for c in self.replica.list(CLASSES)
                    if ((c.get("metadata") or {}).get("annotations") or {}).get(
                        DEFAULT_CLASS_ANNOTATION) == "true"]
        if not defaults:
            return None
        newest = max(str(m.get("creationTimestamp", "")) for m in defaults)
        return min(str(m.get("name")) for m in defaults
                   if str(m.get("creationTimestamp", "")) == newest)

    def __call__(self, kind: Kind, obj: dict[str, Any]) -> None:
        if kind.kind != "Ingress" or kind.group != "networking.k8s.io":
            return
        spec = obj.get("spec")
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not isinstance(spec, dict) or spec.get("ingressClassName") is not None \
                or LEGACY_ANNOTATION in annotations:
            return
        name = self.default()
        if name is not None:
            spec["ingressClassName"] = name
