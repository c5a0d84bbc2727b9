"""Admission: checks of a write's body, after authorization and before the write, as
kube-apiserver's admission chain and RBAC's registry rules.

Hooks run in order; a hook refuses a write by raising an :class:`ApiError` (403 for a
permission, 422 for a value). Today:

- RBAC escalation prevention. A Role or ClusterRole may be written by a user who may
  ``escalate`` it or who holds every rule it grants; a RoleBinding or ClusterRoleBinding by a
  user who may ``bind`` the role it references or who holds every rule of that role. A member
  of ``system:masters`` may do anything. An update that only touches what the garbage
  collector needs (ownerReferences, finalizers) is not checked, as Kubernetes does.

- NodeRestriction (:func:`shoal.authz.node_restriction.admit`): what a node's credential
  may write in a body (its own Node and Lease, the status of pods bound to it), which the
  Node authorizer cannot see from the path.

- Scope writers (:class:`ScopeWriters`): a write to an object of a scope is accepted only
  on a peer that is one of the scope's writers (403 naming the scope and its writers).

Other parts add theirs to :attr:`Admission.hooks`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.api.authorization import forbidden, go_quote_list
from shoal.authz import node_restriction
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer, role_rules
from shoal.authz.reader import ObjectReader
from shoal.authz.scopes import CLUSTER, SCOPES, ScopeIndex
from shoal.authz.user import UserInfo
from shoal.control.node_lifecycle import NOT_READY, UNREACHABLE
from shoal.model.kinds import Kind

RBAC_GROUP = "rbac.authorization.k8s.io"
SCOPE_GROUP = "shoal.dev"


@dataclass(frozen=True)
class AdmissionRequest:
    """One write, as an admission plugin sees it."""

    user: UserInfo
    operation: str  # CREATE, UPDATE or DELETE (Kubernetes' admission.Operation)
    kind: Kind
    namespace: str  # "" for a cluster-scoped object
    name: str
    subresource: str  # "" for the object itself
    obj: dict[str, Any] | None  # the object as it will be written (None for DELETE)
    old: dict[str, Any] | None  # the object as stored (None for CREATE)


@dataclass(frozen=True)
class AdmissionContext:
    """What hooks may consult: the authorizer and the replica it reads."""

    authorizer: Authorizer
    reader: ObjectReader


AdmissionHook = Callable[[AdmissionRequest, AdmissionContext], None]
WarningHook = Callable[[AdmissionRequest, AdmissionContext], list[str]]
"""Says what is suspicious about an accepted write (the client prints it as a Warning)."""


class Admission:
    """The hook list every write goes through."""

    def __init__(self, authorizer: Authorizer, reader: ObjectReader) -> None:
        self.context = AdmissionContext(authorizer, reader)
        self.hooks: list[AdmissionHook] = [node_restriction_hook, rbac_escalation]
        self.warners: list[WarningHook] = [scope_warnings]

    def admit(self, request: AdmissionRequest) -> list[str]:
        """Raise to refuse the write; otherwise the warnings to send with the answer."""
        for hook in self.hooks:
            hook(request, self.context)
        return [w for warn in self.warners for w in warn(request, self.context)]


def node_restriction_hook(req: AdmissionRequest, ctx: AdmissionContext) -> None:
    refusal = node_restriction.admit(req.user, req.kind.plural, req.subresource, req.operation,
                                     req.old, req.obj)
    if refusal is not None:
        raise forbidden(req.kind.group, req.kind.plural, req.name, refusal)


# -- scopes ----------------------------------------------------------------------------------


class ScopeWriters:
    """Refuses a write to an object of a scope on a peer that is not one of its writers.

    The replicas of the scope's other members would refuse the change anyway (it was not
    written by a writer), so it is refused before it is stored, with a message that says
    where to write instead. A peer that is not even a member holds nothing of the scope:
    a create there would make an object it cannot keep. Objects of the cluster scope
    (Namespaces, Nodes, Scopes themselves) are writable on every peer.
    """

    def __init__(self, node_name: str, scopes: ScopeIndex) -> None:
        self.node_name = node_name
        self.scopes = scopes

    def __call__(self, req: AdmissionRequest, ctx: AdmissionContext) -> None:
        if not req.namespace:
            return  # cluster-scoped: always in the cluster scope
        scope_map = self.scopes.current()
        scope = scope_map.scope_of(req.kind.resource, req.namespace)
        if scope == CLUSTER or scope_map.is_writer(scope, self.node_name):
            return
        raise forbidden(req.kind.group, req.kind.plural, req.name,
                        scope_refusal(scope, self.node_name,
                                      scope_map.is_member(scope, self.node_name),
                                      sorted(scope_map.writers(scope) or ())))


def scope_warnings(req: AdmissionRequest, ctx: AdmissionContext) -> list[str]:
    """What a Scope being written will not do as its author may expect: a namespace that a
    Scope whose name sorts first already holds, members that are not (yet) Nodes."""
    if (req.kind.group, req.kind.kind) != (SCOPE_GROUP, "Scope") or req.obj is None:
        return []
    spec = req.obj.get("spec")
    if not isinstance(spec, dict):
        return []
    out: list[str] = []
    earlier = {str((o.get("metadata") or {}).get("name") or ""): o.get("spec") or {}
               for o in ctx.reader.list(SCOPES)}
    for ns in spec.get("namespaces") or []:
        holders = sorted(name for name, s in earlier.items()
                         if name != req.name and ns in (s.get("namespaces") or []))
        first = [h for h in holders if h < req.name]
        if first:
            out.append(f'namespace "{ns}" is already in scope "{first[0]}", whose name sorts '
                       "first: this Scope does not hold it")
        elif holders:
            out.append(f'namespace "{ns}" is in scope "{holders[0]}" too: this Scope\'s name '
                       f'sorts first, so it takes the namespace from "{holders[0]}", whose '
                       "members that are not members here drop its objects")
    if isinstance(spec.get("members"), list) and not spec["members"] and \
            spec.get("memberSelector") is None:
        out.append("no members: no peer holds the scope's objects, and writes to its "
                   "namespaces are refused everywhere")
    for member in spec.get("members") or []:
        if isinstance(member, str) and ctx.reader.get("nodes", "", member) is None:
            out.append(f'member "{member}" is not a Node (yet): it holds the scope once it joins')
    return out


def scope_refusal(scope: str, node: str, member: bool, writers: list[str]) -> str:
    """Why a write of ``scope`` is refused on ``node``, and where it would be accepted."""
    what = "a writer" if member else "a member"
    where = f"write through one of: {', '.join(writers)}" if writers else \
        "the scope has no writers"
    return f'scopes "{scope}": this node ({node}) is not {what} of the scope; {where}'


# -- RBAC escalation prevention --------------------------------------------------------------

_ROLES = ("Role", "ClusterRole")
_BINDINGS = ("RoleBinding", "ClusterRoleBinding")


def rbac_escalation(req: AdmissionRequest, ctx: AdmissionContext) -> None:
    if (req.kind.group != RBAC_GROUP or req.operation not in ("CREATE", "UPDATE")
            or req.obj is None or req.subresource or req.user.is_admin):
        return
    if req.old is not None and only_gc_fields_change(req.obj, req.old):
        return
    if req.kind.kind in _ROLES:
        _check_role(req, ctx)
    elif req.kind.kind in _BINDINGS:
        _check_binding(req, ctx)


def _check_role(req: AdmissionRequest, ctx: AdmissionContext) -> None:
    assert req.obj is not None
    escalate = Attributes(req.user, "escalate", True, RBAC_GROUP, "*", req.kind.plural, "",
                          req.namespace, req.name)
    if ctx.authorizer.authorize(escalate).allowed:
        return
    if req.kind.kind == "ClusterRole" and req.obj.get("aggregationRule"):
        # An aggregated ClusterRole gathers whatever rules match its selectors, now or later.
        full = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]}]
        if ctx.authorizer.uncovered(req.user, req.namespace, full):
            raise forbidden(RBAC_GROUP, req.kind.plural, req.name,
                            "must have cluster-admin privileges to use the aggregationRule")
    rules = [r for r in req.obj.get("rules") or [] if isinstance(r, dict)]
    _confirm_no_escalation(req, ctx, rules)


def _check_binding(req: AdmissionRequest, ctx: AdmissionContext) -> None:
    assert req.obj is not None
    ref = req.obj.get("roleRef") or {}
    ref_kind, ref_name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    resource = {"ClusterRole": "clusterroles", "Role": "roles"}.get(ref_kind)
    if resource is None:
        return  # validation refuses the binding
    bind = Attributes(req.user, "bind", True, str(ref.get("apiGroup") or ""), "", resource, "",
                      req.namespace, ref_name)
    if ctx.authorizer.authorize(bind).allowed:
        return
    role_namespace = "" if ref_kind == "ClusterRole" else req.namespace
    if ctx.reader.get(f"{resource}.{RBAC_GROUP}", role_namespace, ref_name) is None:
        raise forbidden(RBAC_GROUP, req.kind.plural, req.name,
                        f'{resource}.{RBAC_GROUP} "{ref_name}" not found')
    # A ClusterRole's rules as RBAC evaluates them: aggregated ones gathered live.
    _confirm_no_escalation(req, ctx, role_rules(ctx.reader, ref_kind, ref_name, req.namespace))


def _confirm_no_escalation(req: AdmissionRequest, ctx: AdmissionContext,
                           rules: list[dict[str, Any]]) -> None:
    missing = ctx.authorizer.uncovered(req.user, req.namespace, rules)
    if not missing:
        return
    described = "\n".join(sorted({compact_rule(r) for r in missing}))
    raise forbidden(RBAC_GROUP, req.kind.plural, req.name,
                    f"user {_quote(req.user.username)} (groups={go_quote_list(req.user.groups)}) "
                    f"is attempting to grant RBAC permissions not currently held:\n{described}")


def compact_rule(rule: dict[str, Any]) -> str:
    """A PolicyRule as Kubernetes prints a missing one: ``{APIGroups:[""], Verbs:["get"]}``."""
    parts = [f"{label}:{go_quote_list([str(v) for v in rule.get(key) or []])}"
             for label, key in (("APIGroups", "apiGroups"), ("Resources", "resources"),
                                ("NonResourceURLs", "nonResourceURLs"),
                                ("ResourceNames", "resourceNames"), ("Verbs", "verbs"))
             if rule.get(key)]
    return "{" + ", ".join(parts) + "}"


def only_gc_fields_change(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether an update changes nothing but ownerReferences and finalizers (and what the
    server sets itself)."""
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        meta = out.setdefault("metadata", {})
        for key in ("ownerReferences", "finalizers", "resourceVersion", "managedFields",
                    "generation", "uid", "creationTimestamp"):
            meta.pop(key, None)
        return out
    return strip(new) == strip(old)


def _quote(s: str) -> str:
    return go_quote_list([s])[1:-1]


# --- DefaultTolerationSeconds (issue 12): every new pod tolerates a node that is not ready
# or unreachable for 300 s, unless it says otherwise, as kube-apiserver's admission plugin.
DEFAULT_TOLERATION_SECONDS = 300
_DEFAULT_TOLERATED = (NOT_READY, UNREACHABLE)


def default_tolerations(kind: Kind, obj: dict[str, Any]) -> None:
    """A store admission hook (``ObjectStore.admission``): adds the two NoExecute
    tolerations to a pod being created that tolerates neither taint already."""
    if kind.kind != "Pod" or kind.group:
        return
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    tolerations = spec.get("tolerations")
    if tolerations is None:
        tolerations = spec["tolerations"] = []
    if not isinstance(tolerations, list):
        return
    for key in _DEFAULT_TOLERATED:
        if any(_tolerates_no_execute(t, key) for t in tolerations if isinstance(t, dict)):
            continue
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": DEFAULT_TOLERATION_SECONDS})
    if not tolerations:
        del spec["tolerations"]


def _tolerates_no_execute(t: dict[str, Any], key: str) -> bool:
    # As the plugin's check: the key matches (or is empty with Exists), the effect is
    # NoExecute or empty (any).
    if t.get("effect") not in (None, "", "NoExecute"):
        return False
    if not t.get("key"):
        return t.get("operator") == "Exists"
    return bool(t.get("key") == key)
# --- end DefaultTolerationSeconds ---
