"""ServiceAccounts: every namespace's ``default`` ServiceAccount and ``kube-root-ca.crt``
ConfigMap (kube-controller-manager's serviceaccount and root-ca-cert-publisher
controllers), and what every new pod gets (the ServiceAccount admission plugin).

Both objects have deterministic content (the CA certificate is the same file on every
peer), so when two peers create them while apart the merge makes one object. The
preferred actor of the namespace writes them; any peer does when it is unreachable. A joiner
starts this controller only once its first pull completed (``creates_defaults``,
``manager.run_when_may_create``): caught up as cut off, its replica is empty and its
creates, the later ones, would give the cluster's objects new uids, and a token names its
ServiceAccount's uid, so every token of ``default`` would stop verifying.

Admission (:func:`admit_pod`, an ``ObjectStore.admission`` hook, so that it applies to
pods created through the API and by controllers alike) gives a pod ``serviceAccountName``
(default ``default``) and, unless ``automountServiceAccountToken: false`` on the pod or its
ServiceAccount, Kubernetes' projected volume ``kube-api-access-<5 chars>`` mounted
read-only at /var/run/secrets/kubernetes.io/serviceaccount in every container. The five
characters come from a hash of the pod's namespace and name, not from chance: two peers
that create the same controller pod while apart then add the same volume, and the merge
(volumes keyed by name) keeps one.

A pod that names a ServiceAccount this replica does not hold is refused, as Kubernetes
does (403 'error looking up service account'), except ``default``, which the controller
is about to make: on a peer whose replica has not caught up the refusal is the same a
kube-apiserver gives before the ServiceAccount is created, and controllers retry their
creations on their next pass, so the pod appears once the ServiceAccount arrives.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from typing import Any

from shoal.control.controller import Controller
from shoal.control.field_owner import created_by
from shoal.control.ownership import PeerView, SinglePeer, should_act
from shoal.model.kinds import Kind
from shoal.store.change_feed import Change
from shoal.store.objects import Forbidden, ObjectStore, StoreError
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

DEFAULT = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_KEY = "ca.crt"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
TOKEN_EXPIRATION = 3607  # what Kubernetes puts in the projected volume
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' name suffix alphabet


class ServiceAccountsController(Controller):
    """Keeps ``default`` and ``kube-root-ca.crt`` in every namespace that is not going."""

    name = "service-accounts"
    creates_defaults = True

    def __init__(self, store: ObjectStore, ca_cert_pem: bytes, view: PeerView | None = None,
                 **kw: Any) -> None:
        super().__init__(store, **kw)
        self.view = view or SinglePeer(store.replica.node_id)
        self.ca_cert = ca_cert_pem.decode()
        self.ns_kind = self._kind("Namespace")
        self.sa_kind = self._kind("ServiceAccount")
        self.cm_kind = self._kind("ConfigMap")

    def _kind(self, kind: str) -> Kind:
        k = self.store.registry.by_kind("v1", kind)
        assert k is not None
        return k

    def relevant(self, change: Change) -> bool:
        if change.resource == "namespaces":
            return True
        return change.type == "DELETED" and change.resource in ("serviceaccounts", "configmaps")

    async def sync(self) -> bool:
        pending = False
        scopes = self.scopes.current()
        for ns in self.store.list(self.ns_kind):
            meta = ns["metadata"]
            # The Namespace is in the cluster scope; what is created in it, in its scope.
            if meta.get("deletionTimestamp") or not should_act(
                    self.view, f"namespace/{meta.get('uid')}",
                    scopes.scope_of_namespace(meta["name"]), scopes):
                continue
            try:
                await self._ensure(meta["name"])
            except StoreError as e:
                log.debug("namespace %s: %s", meta["name"], e)
                pending = True
        return pending

    async def _ensure(self, ns: str) -> None:
        if self.store.find(self.sa_kind, ns, DEFAULT) is None:
            await self.store.create(self.sa_kind, {"metadata": {"name": DEFAULT}}, ns,
                                    managed_fields=created_by(self.store, self.sa_kind))
        cm = self.store.find(self.cm_kind, ns, ROOT_CA_CONFIGMAP)
        data = {ROOT_CA_KEY: self.ca_cert}
        if cm is None:
            await self.store.create(self.cm_kind, {"metadata": {"name": ROOT_CA_CONFIGMAP},
                                                   "data": data}, ns,
                                    managed_fields=created_by(self.store, self.cm_kind))
        elif cm.get("data") != data:  # as Kubernetes' publisher: an edited copy is reset
            new = copy.deepcopy(cm)
            new["data"] = data
            new.pop("binaryData", None)
            await self.store.update(self.cm_kind, new, ns, ROOT_CA_CONFIGMAP)


@functools.lru_cache(maxsize=1024)  # every pod create asks; few accounts
def volume_name(namespace: str, service_account: str) -> str:
    """The token volume's name: Kubernetes draws it at random per pod. Here it is the same
    on every peer for the same pod (two peers admitting it add one volume, not two), and
    the same for every pod of one ServiceAccount, so that the pods of one template have
    one spec and a create's checks of it are remembered (``shoal.model.value_memo``)."""
    digest = hashlib.sha256(f"{namespace}/{service_account}".encode()).digest()
    return VOLUME_PREFIX + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])


def projected_volume(name: str) -> dict[str, Any]:
    """Kubernetes' kube-api-access volume: token, ca.crt and namespace."""
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP,
                       "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1",
                                                 "fieldPath": "metadata.namespace"}}]}},
    ]}}


def _mounts_token(container: dict[str, Any]) -> bool:
    return any(m.get("mountPath") == MOUNT_PATH for m in container.get("volumeMounts") or [])


def admit_pod(kind: Kind, obj: dict[str, Any], replica: Replica) -> None:
    """The ServiceAccount admission plugin on a pod being created (changes ``obj``)."""
    if kind.kind != "Pod" or kind.group:
        return
    meta = obj.get("metadata") or {}
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    ns = str(meta.get("namespace") or "default")
    # serviceAccount is the deprecated alias; Kubernetes fills one from the other.
    sa_name = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT)
    spec["serviceAccountName"] = sa_name
    spec["serviceAccount"] = sa_name
    sa = replica.get("serviceaccounts", ns, sa_name)
    if sa is None and sa_name != DEFAULT:
        raise Forbidden(f'pods "{meta.get("name", "")}" is forbidden: error looking up service '
                        f'account {ns}/{sa_name}: serviceaccount "{sa_name}" not found',
                        name=str(meta.get("name", "")))
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = (sa or {}).get("automountServiceAccountToken")
    if automount is False:
        return
    containers = [c for key in ("initContainers", "containers")
                  for c in spec.get(key) or [] if isinstance(c, dict)]
    if any(_mounts_token(c) for c in containers):
        return  # the pod mounts something there itself, as Kubernetes leaves it alone
    vol = volume_name(ns, sa_name)
    volumes = spec.setdefault("volumes", [])
    if not any(v.get("name") == vol for v in volumes):
        volumes.append(projected_volume(vol))
    for c in containers:
        c.setdefault("volumeMounts", []).append(
            {"name": vol, "readOnly": True, "mountPath": MOUNT_PATH})
