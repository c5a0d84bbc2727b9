"""The OpenAPI documents: ``/openapi/v2`` (Swagger 2.0) and ``/openapi/v3`` (one per group/version).

kubectl reads these to make decisions, not only to print documentation:

- ``kubectl explain`` renders the v3 document of the resource's group/version. It finds
  the kind through the ``x-kubernetes-group-version-kind`` of the list/get operations
  on the resource's paths, then the component schema carrying the same GVK (as a list).
- ``kubectl apply``/``create`` with the default ``--validate=strict`` looks in the v3
  document for a ``fieldValidation`` query parameter on the PATCH operation of the kind.
  If it is there, kubectl leaves validation to the server (it always sends
  ``fieldValidation=Strict``). If the parameter or the document is missing, kubectl
  validates the manifest itself against the v2 document, which it downloads as
  *protobuf* (:meth:`OpenAPIDocuments.v2_protobuf`). ``kind: List`` manifests always
  take that client-side path.
- ``kubectl apply`` computes strategic-merge patches from the
  ``x-kubernetes-patch-merge-key``/``-strategy`` extensions of the v3 schemas. They come
  from :mod:`shoal.model.merge_keys`, so that kubectl merges lists the way the server does.

Schemas of built-in kinds come from the models of the ``kubernetes`` Python client
(v37, the release we emulate), generated into :mod:`shoal.model.schemas` by
``scripts/generate_schemas.py``: the client is not needed at run time. Custom
resources use the ``openAPIV3Schema`` of their CRD version. Every document is cached
until the kinds of its group/version change; the models' descriptions are read only
while documents are built.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from shoal.api.discovery import GIT_VERSION, REVIEW_KINDS, served_groups, served_kinds
from shoal.model import merge_keys, schemas
from shoal.model.kinds import BUILTIN_KINDS, Kind, KindRegistry
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS

JSON = dict[str, Any]

# Bump when the generated documents change shape, so that their hashes change too.
_FORMAT = "shoal-openapi-1"

_META_PKG = "io.k8s.apimachinery.pkg.apis.meta.v1"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_PATCH = f"{_META_PKG}.Patch"

# Meta types every document may reference; claimed first so they get the meta package.
_META_ROOTS = (
    "V1ObjectMeta", "V1ListMeta", "V1Status", "V1DeleteOptions", "V1LabelSelector",
    "V1Condition", "V1APIResourceList", "V1WatchEvent",
)
_STATUS_GVK = {"group": "", "kind": "Status", "version": "v1"}
# Kinds outside the registry that subresource operations take or return.
_SCALE = ("autoscaling", "v1", "Scale")
_BINDING = ("", "v1", "Binding")
_EVICTION = ("policy", "v1", "Eviction")

_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#resources"
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DOC = (
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#metadata"
)
_LIST_METADATA_DOC = (
    "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#types-kinds"
)

_PRIMITIVES: dict[str, JSON] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "bytes": {"type": "string", "format": "byte"},
}

_EXTRA_DEFINITIONS: dict[str, JSON] = {
    _INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string. When used "
        "in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner "
        "type.",
        "type": "string",
        "format": "int-or-string",
    },
    _PATCH: {
        "description": "Patch is provided to give a concrete name and type to the Kubernetes "
        "PATCH request body.",
        "type": "object",
    },
}


# -- the client's models, as generated into shoal.model.schemas ------------------------------


@dataclass(frozen=True)
class _Type:
    """A field type: ``prim`` (name), ``model`` (class name), ``list``/``map`` (inner),
    ``intstr`` or ``any`` (free-form JSON)."""

    kind: str
    name: str = ""
    inner: _Type | None = None


@dataclass(frozen=True)
class _Field:
    json_name: str
    type: _Type
    description: str
    required: bool


def _parse_type(spec: str) -> _Type:
    """Parse a model field's type (``List[V1Container]``...)."""
    if spec.startswith("List[") and spec.endswith("]"):
        return _Type("list", inner=_parse_type(spec[5:-1]))
    if spec.startswith("Dict[str, ") and spec.endswith("]"):
        return _Type("map", inner=_parse_type(spec[10:-1]))
    if spec in _PRIMITIVES:
        return _Type("prim", spec)
    if spec == schemas.INT_OR_STRING:
        return _Type("intstr")
    if spec == "object":
        return _Type("any")
    return _Type("model", spec)


def _split_class_name(name: str) -> tuple[str, str, str]:
    """``CoreV1Event`` -> (``core``, ``v1``, ``Event``); ``V1PodSpec`` -> ("", ``v1``, ``PodSpec``)."""
    i = 0
    while i < len(name) and not (name[i] == "V" and name[i + 1 : i + 2].isdigit()):
        i += 1
    prefix, rest = name[:i], name[i + 1 :]
    j = 0
    while j < len(rest) and (rest[j].isdigit() or rest[j].islower()):
        j += 1
    return prefix.lower(), "v" + rest[:j], rest[j:]


def _package(leaf: str, version: str) -> str:
    """The Go package Kubernetes names definitions after: ``io.k8s.api.core.v1``."""
    if leaf == "meta":
        return _META_PKG
    if leaf == "apiextensions":
        return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}"
    if leaf == "apiregistration":
        return f"io.k8s.kube-aggregator.pkg.apis.apiregistration.{version}"
    return f"io.k8s.api.{leaf}.{version}"


def _group_leaf(group: str) -> str:
    return group.split(".")[0] if group else "core"


def _gvk(group: str, version: str, kind: str) -> JSON:
    # Exactly these three keys: kubectl explain compares the dicts for equality.
    return {"group": group, "kind": kind, "version": version}


class _Catalog:
    """Definition names, fields, GVKs and patch metadata of the client models we use.

    The definition name of a model is the Go package of the first root (meta, then the
    built-in kinds in order) that reaches it, as Kubernetes names them
    (``io.k8s.api.core.v1.PodSpec``). The catalog does not depend on any registry, so
    names are stable across documents and processes.
    """

    def __init__(self) -> None:
        self.defname: dict[str, str] = {}
        self._taken: dict[str, str] = {}
        self._fields: dict[str, list[_Field]] = {}
        self.gvks: dict[str, list[JSON]] = {}
        # (model, json field) -> merge key, or None for a list of primitives merged as a set.
        self.patch: dict[tuple[str, str], str | None] = {}
        self._bodies: dict[tuple[str, bool], JSON] = {}
        self._deps: dict[str, frozenset[str]] = {}
        self.kind_models: dict[tuple[str, str, str], str] = {}

        for root in _META_ROOTS:
            self._claim(root, "meta")
        self.gvks["V1Status"] = [dict(_STATUS_GVK)]
        specs = [(k.group, k.version, k.kind) for k in (*BUILTIN_KINDS, *REVIEW_KINDS)]
        for group, version, kind in [*specs, _BINDING, _SCALE, _EVICTION]:
            model = schemas.model_for_kind(group, version, kind)
            if model is None:
                continue
            self.kind_models[(group, version, kind)] = model
            self._claim(model, _group_leaf(group))
            self.gvks.setdefault(model, []).append(_gvk(group, version, kind))
            list_model = schemas.model_for_kind(group, version, kind + "List")
            if list_model is not None:
                self.kind_models[(group, version, kind + "List")] = list_model
                self._claim(list_model, _group_leaf(group))
                self.gvks.setdefault(list_model, []).append(_gvk(group, version, kind + "List"))
        for k in BUILTIN_KINDS:
            model = self.kind_models.get((k.group, k.version, k.kind))
            if model is not None and merge_keys.known_kind(k.group, k.kind):
                self._walk_patch(k.group, k.kind, model, (), frozenset({model}))

    def fields(self, name: str) -> list[_Field]:
        cached = self._fields.get(name)
        if cached is not None:
            return cached
        docs = schemas.field_docs(name)
        out = [
            _Field(f.json_name, _parse_type(f.type), docs[i] if i < len(docs) else "",
                   f.required)
            for i, f in enumerate(schemas.model_fields(name) or ())
        ]
        self._fields[name] = out
        return out

    def deps(self, name: str) -> frozenset[str]:
        """The model classes the fields of ``name`` refer to directly."""
        cached = self._deps.get(name)
        if cached is None:
            found: set[str] = set()
            for f in self.fields(name):
                t: _Type | None = f.type
                while t is not None and t.kind in ("list", "map"):
                    t = t.inner
                if t is not None and t.kind == "model":
                    found.add(t.name)
            cached = self._deps[name] = frozenset(found)
        return cached

    def _claim(self, root: str, leaf: str) -> None:
        stack = [root]
        while stack:
            name = stack.pop()
            if name in self.defname:
                continue
            prefix, version, go_name = _split_class_name(name)
            defname = f"{_package(prefix or leaf, version)}.{go_name}"
            if self._taken.get(defname, name) != name:
                defname = f"{defname}_{name}"  # never seen; keeps names unique regardless
            self.defname[name] = defname
            self._taken[defname] = name
            stack.extend(sorted(self.deps(name) - self.defname.keys()))

    def name_of(self, model: str) -> str:
        if model not in self.defname:
            self._claim(model, "core")
        return self.defname[model]

    def _walk_patch(
        self, group: str, kind: str, model: str, path: tuple[str, ...], seen: frozenset[str]
    ) -> None:
        """Record the merge keys merge_keys gives for the lists reachable from a kind."""
        for f in self.fields(model):
            p = (*path, f.json_name)
            t = f.type
            if t.kind == "list" and t.inner is not None:
                if t.inner.kind == "model":
                    key = merge_keys.list_merge_key(group, kind, p)
                    if key is not None:
                        self.patch[(model, f.json_name)] = key
                    if t.inner.name not in seen:
                        self._walk_patch(group, kind, t.inner.name, p, seen | {t.inner.name})
                elif merge_keys.is_merging_primitive_list(group, kind, p):
                    self.patch.setdefault((model, f.json_name), None)
            elif t.kind == "model" and t.name not in seen:
                self._walk_patch(group, kind, t.name, p, seen | {t.name})

    # -- schemas --

    def type_schema(self, t: _Type, v3: bool) -> JSON:
        if t.kind == "prim":
            return dict(_PRIMITIVES[t.name])
        if t.kind == "model":
            return _ref(self.name_of(t.name), v3)
        if t.kind == "intstr":
            return _ref(_INT_OR_STRING, v3)
        if t.kind == "list" and t.inner is not None:
            return {"type": "array", "items": self.type_schema(t.inner, v3)}
        if t.kind == "map" and t.inner is not None:
            return {"type": "object", "additionalProperties": self.type_schema(t.inner, v3)}
        return {}

    def body(self, model: str, v3: bool) -> JSON:
        """The definition of a model class (cached; callers must not mutate it)."""
        cached = self._bodies.get((model, v3))
        if cached is not None:
            return cached
        props: JSON = {}
        required: list[str] = []
        for f in self.fields(model):
            description = f.description
            if not description and f.type.kind == "model":
                # The client drops descriptions of object fields; the type's is the next best.
                description = schemas.model_doc(f.type.name)
            schema = _describe(self.type_schema(f.type, v3), description, v3)
            if (model, f.json_name) in self.patch:
                key = self.patch[(model, f.json_name)]
                schema["x-kubernetes-patch-strategy"] = "merge"
                if key is not None:
                    schema["x-kubernetes-patch-merge-key"] = key
            props[f.json_name] = schema
            if f.required:
                required.append(f.json_name)
        out: JSON = {"description": schemas.model_doc(model), "type": "object"}
        if props:
            out["properties"] = props
        if required:
            out["required"] = required
        if model in self.gvks:
            out["x-kubernetes-group-version-kind"] = self.gvks[model]
        self._bodies[(model, v3)] = out
        return out

    def forget_bodies(self) -> None:
        """Drop the schemas and parsed fields (built again from shoal.model.schemas)."""
        self._bodies.clear()
        self._fields.clear()
        self._deps.clear()

    def closure(self, roots: Iterable[str]) -> list[str]:
        """Every model reachable from ``roots``, in a stable order."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(self.deps(name) - seen)
        return sorted(seen, key=self.name_of)


_catalog_lock = threading.Lock()
_catalog: _Catalog | None = None


def _get_catalog() -> _Catalog:
    global _catalog
    with _catalog_lock:
        if _catalog is None:
            _catalog = _Catalog()
        return _catalog


def _ref(defname: str, v3: bool) -> JSON:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    return {"$ref": prefix + defname}


def _describe(schema: JSON, description: str, v3: bool) -> JSON:
    """Attach a description; in OpenAPI 3.0 siblings of ``$ref`` are ignored, so wrap it."""
    if not description:
        return schema
    if "$ref" in schema and v3:
        return {"allOf": [schema], "description": description}
    return {**schema, "description": description}


# -- custom resources ----------------------------------------------------------------------


def _crd_package(group: str, version: str) -> str:
    # Kubernetes names CRD definitions after the reversed group: com.example.stable.v1.CronTab.
    return ".".join([*reversed(group.split(".")), version])


def _v2_schema(schema: Any) -> Any:
    """Make a structural OpenAPI v3 schema acceptable to Swagger 2.0 consumers (kubectl)."""
    if isinstance(schema, list):
        return [_v2_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: v for k, v in schema.items()
        if k not in ("nullable", "anyOf", "oneOf", "allOf", "not")
    }
    # Swagger 2.0 cannot say "null or T", "int or string" or "anything under here":
    # leave such nodes untyped so kubectl's client-side validation accepts any value.
    if schema.get("nullable") or schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if schema.get("nullable") or schema.get("x-kubernetes-preserve-unknown-fields"):
        for k in ("type", "properties", "items", "additionalProperties", "required"):
            out.pop(k, None)
    for key in ("properties", "patternProperties", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _v2_schema(s) for name, s in out[key].items()}
    for key in ("items", "additionalProperties", "additionalItems"):
        if isinstance(out.get(key), (dict, list)):
            out[key] = _v2_schema(out[key])
    return out


def _crd_definitions(kind: Kind, v3: bool) -> dict[str, JSON]:
    crd_version = kind.crd_version or {}
    base = ((crd_version.get("schema") or {}).get("openAPIV3Schema")) or {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return _schema_definitions(kind, base, v3)


def _schema_definitions(kind: Kind, base: JSON, v3: bool) -> dict[str, JSON]:
    """The definitions of a kind and its list from a structural schema (a CRD's, or one of
    :data:`HAND_WRITTEN_SCHEMAS`), named after the reversed group as Kubernetes names CRDs'."""
    schema: JSON = copy.deepcopy(base)
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"type": "string", "description": _API_VERSION_DOC}
    props["kind"] = {"type": "string", "description": _KIND_DOC}
    props["metadata"] = _describe(_ref(f"{_META_PKG}.ObjectMeta", v3), _METADATA_DOC, v3)
    schema["properties"] = props
    schema["type"] = "object"
    if not v3:
        # A root that preserves unknown fields ends up untyped: kubectl then skips it.
        schema = _v2_schema(schema)
    schema["x-kubernetes-group-version-kind"] = [_gvk(kind.group, kind.version, kind.kind)]
    name = f"{_crd_package(kind.group, kind.version)}.{kind.kind}"
    list_schema: JSON = {
        "description": f"{kind.kind}List is a list of {kind.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_DOC},
            "items": {
                "type": "array",
                "description": f"List of {kind.plural}. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                "api-conventions.md",
                "items": _ref(name, v3),
            },
            "kind": {"type": "string", "description": _KIND_DOC},
            "metadata": _describe(_ref(f"{_META_PKG}.ListMeta", v3), _LIST_METADATA_DOC, v3),
        },
        "x-kubernetes-group-version-kind": [_gvk(kind.group, kind.version, kind.list_kind)],
    }
    return {name: schema, f"{name}List": list_schema}


# -- paths and operations ------------------------------------------------------------------

_DESCRIPTIONS = {
    "pretty": "If 'true', then the output is pretty printed.",
    "dryRun": "When present, indicates that modifications should not be persisted. An invalid "
    "or unrecognized dryRun directive will result in an error response and no further "
    "processing of the request. Valid values are: - All: all dry run stages will be processed",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making "
    "these changes. The value must be less than or 128 characters long, and only contain "
    "printable characters. This field is required for apply requests "
    "(application/apply-patch) but optional for non-apply patch types.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the "
    "request containing unknown or duplicate fields. Valid values are: - Ignore: silently "
    "drop unknown fields and keep the last of duplicate fields. - Warn: send a warning for "
    "each unknown or duplicate field, and succeed. - Strict: fail the request with a "
    "BadRequest error if any unknown or duplicate field is present.",
    "force": "Force is going to \"force\" Apply requests. It means user will re-acquire "
    "conflicting fields owned by other people. Force flag must be unset for non-apply patch "
    "requests.",
    "labelSelector": "A selector to restrict the list of returned objects by their labels. "
    "Defaults to everything.",
    "fieldSelector": "A selector to restrict the list of returned objects by their fields. "
    "Defaults to everything.",
    "watch": "Watch for changes to the described resources and return them as a stream of "
    "add, update, and remove notifications. Specify resourceVersion.",
    "allowWatchBookmarks": "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
    "resourceVersion": "resourceVersion sets a constraint on what resource versions a request "
    "may be served from. In Shoal it is the local revision of the node that serves it.",
    "resourceVersionMatch": "resourceVersionMatch determines how resourceVersion is applied "
    "to list calls.",
    "sendInitialEvents": "With watch=true, start the watch stream with synthetic ADDED events "
    "for every existing object, then a BOOKMARK.",
    "timeoutSeconds": "Timeout for the list/watch call.",
    "limit": "limit is a maximum number of responses to return for a list call.",
    "continue": "The continue option should be set when retrieving more results from the "
    "server.",
    "gracePeriodSeconds": "The duration in seconds before the object should be deleted.",
    "orphanDependents": "Deprecated: please use the PropagationPolicy.",
    "propagationPolicy": "Whether and how garbage collection will be performed: 'Orphan', "
    "'Background' or 'Foreground'.",
    "namespace": "object name and auth scope, such as for teams and projects",
    "container": "The container for which to stream logs or run a command.",
    "follow": "Follow the log stream of the pod.",
    "previous": "Return previous terminated container logs.",
    "tailLines": "If set, the number of lines from the end of the logs to show.",
    "sinceSeconds": "A relative time in seconds before the current time from which to show "
    "logs.",
    "timestamps": "If true, add an RFC3339 timestamp at the beginning of every line.",
    "command": "Command is the remote command to execute; argv array.",
    "stdin": "Redirect the standard input stream of the pod for this call.",
    "stdout": "Redirect the standard output stream of the pod for this call.",
    "stderr": "Redirect the standard error stream of the pod for this call.",
    "tty": "TTY if true indicates that a tty will be allocated for the exec call.",
}

_PARAM_TYPES = {
    "watch": "boolean", "allowWatchBookmarks": "boolean", "sendInitialEvents": "boolean",
    "timeoutSeconds": "integer", "limit": "integer", "gracePeriodSeconds": "integer",
    "orphanDependents": "boolean", "force": "boolean", "follow": "boolean",
    "previous": "boolean", "tailLines": "integer", "sinceSeconds": "integer",
    "timestamps": "boolean", "stdin": "boolean", "stdout": "boolean", "stderr": "boolean",
    "tty": "boolean",
}

_LIST_PARAMS = (
    "allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
    "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch",
)
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")

_PATCH_TYPES_BUILTIN = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
# Custom resources take no strategic merge patch: kubectl sends them a JSON merge patch.
_PATCH_TYPES_CUSTOM = _PATCH_TYPES_BUILTIN[:3]


def _param(name: str, where: str, v3: bool, description: str | None = None) -> JSON:
    p: JSON = {"name": name, "in": where,
               "description": description or _DESCRIPTIONS.get(name, name)}
    typ = _PARAM_TYPES.get(name, "string")
    if where == "path":
        p["required"] = True
    if v3:
        p["schema"] = {"type": typ, "uniqueItems": True}
    else:
        p["type"] = typ
        p["uniqueItems"] = True
    return p


def _op_prefix(group: str, version: str) -> str:
    """``CoreV1``, ``AppsV1``, ``CoordinationV1``, ``StableExampleComV1`` (as Kubernetes)."""
    if not group:
        parts = ["core"]
    elif group.endswith(".k8s.io"):
        parts = [group.removesuffix(".k8s.io").split(".")[0]]
    else:
        parts = group.replace("-", ".").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts) + version[:1].upper() + version[1:]


@dataclass
class _Ops:
    """Builds the operations of one group/version in one flavour (v2 or v3)."""

    group: str
    version: str
    v3: bool
    custom: bool = False

    @property
    def tag(self) -> str:
        p = _op_prefix(self.group, self.version)
        stem = p.removesuffix(self.version[:1].upper() + self.version[1:])
        return f"{stem[:1].lower()}{stem[1:]}_{self.version}"

    def op(
        self,
        action: str,
        verb_id: str,
        description: str,
        gvk: JSON,
        params: Iterable[str],
        response: JSON | None,
        body: JSON | None = None,
        body_types: Iterable[str] = ("*/*",),
        created: bool = False,
        produces: Iterable[str] = ("application/json", "application/yaml"),
    ) -> JSON:
        p = [_param(name, "query", self.v3) for name in params]
        out: JSON = {
            "tags": [self.tag],
            "description": description,
            "operationId": verb_id,
        }
        produces = list(produces)
        if self.v3:
            out["parameters"] = p
            if body is not None:
                out["requestBody"] = {
                    "content": {t: {"schema": body} for t in body_types},
                    "required": True,
                }
            content = {t: {"schema": response or {"type": "string"}} for t in produces}
            responses: JSON = {"200": {"description": "OK", "content": content}}
            if created:
                responses["201"] = {"description": "Created", "content": content}
                responses["202"] = {"description": "Accepted", "content": content}
        else:
            if body is not None:
                p.append({"name": "body", "in": "body", "required": True, "schema": body})
                out["consumes"] = list(body_types)
            out["parameters"] = p
            out["produces"] = produces
            responses = {"200": {"description": "OK", "schema": response or {"type": "string"}}}
            if created:
                responses["201"] = {"description": "Created", "schema": response}
                responses["202"] = {"description": "Accepted", "schema": response}
        responses["401"] = {"description": "Unauthorized"}
        out["responses"] = responses
        out["x-kubernetes-action"] = action
        out["x-kubernetes-group-version-kind"] = gvk
        return out

    def path_params(self, names: Iterable[str], kind: str) -> list[JSON]:
        out = []
        for n in names:
            desc = f"name of the {kind}" if n == "name" else None
            out.append(_param(n, "path", self.v3, desc))
        out.append(_param("pretty", "query", self.v3))
        return out


def _resource_paths(ops: _Ops, k: Kind, kind_def: str, list_def: str) -> dict[str, JSON]:
    """The path items of one resource and its subresources."""
    v3 = ops.v3
    prefix = f"/apis/{k.group}/{k.version}" if k.group else f"/api/{k.version}"
    scope = "/namespaces/{namespace}" if k.namespaced else ""
    ns_word = "Namespaced" if k.namespaced else ""
    p = _op_prefix(k.group, k.version)
    gvk = _gvk(k.group, k.version, k.kind)
    obj, lst = _ref(kind_def, v3), _ref(list_def, v3)
    status = _ref(f"{_META_PKG}.Status", v3)
    delete_options = _ref(f"{_META_PKG}.DeleteOptions", v3)
    patch_body = _ref(_PATCH, v3)
    patch_types = _PATCH_TYPES_CUSTOM if ops.custom else _PATCH_TYPES_BUILTIN
    coll_params = ["namespace"] if k.namespaced else []
    item_params = ["name", *coll_params]
    collection = f"{prefix}{scope}/{k.plural}"
    item = f"{collection}/{{name}}"
    out: dict[str, JSON] = {}

    out[collection] = {
        "get": ops.op("list", f"list{p}{ns_word}{k.kind}",
                      f"list or watch objects of kind {k.kind}", gvk, _LIST_PARAMS, lst,
                      produces=("application/json", "application/yaml",
                                "application/json;stream=watch")),
        "post": ops.op("post", f"create{p}{ns_word}{k.kind}", f"create a {k.kind}", gvk,
                       _WRITE_PARAMS, obj, body=obj, created=True),
        "delete": ops.op("deletecollection", f"delete{p}Collection{ns_word}{k.kind}",
                         f"delete collection of {k.kind}", gvk,
                         (*_DELETE_PARAMS, *_LIST_PARAMS[:-1]), status, body=delete_options),
        "parameters": ops.path_params(coll_params, k.kind),
    }
    if k.group == "" and k.plural == "namespaces":
        del out[collection]["delete"]
    out[item] = {
        "get": ops.op("get", f"read{p}{ns_word}{k.kind}", f"read the specified {k.kind}",
                      gvk, (), obj),
        "put": ops.op("put", f"replace{p}{ns_word}{k.kind}", f"replace the specified {k.kind}",
                      gvk, _WRITE_PARAMS, obj, body=obj, created=True),
        "patch": ops.op("patch", f"patch{p}{ns_word}{k.kind}",
                        f"partially update the specified {k.kind}", gvk,
                        (*_WRITE_PARAMS, "force"), obj, body=patch_body, body_types=patch_types,
                        created=True),
        "delete": ops.op("delete", f"delete{p}{ns_word}{k.kind}",
                         f"delete a {k.kind}", gvk, _DELETE_PARAMS, status, body=delete_options,
                         created=True),
        "parameters": ops.path_params(item_params, k.kind),
    }
    if k.namespaced:
        out[f"{prefix}/{k.plural}"] = {
            "get": ops.op("list", f"list{p}{k.kind}ForAllNamespaces",
                          f"list or watch objects of kind {k.kind}", gvk, _LIST_PARAMS, lst,
                          produces=("application/json", "application/yaml",
                                    "application/json;stream=watch")),
            "parameters": ops.path_params((), k.kind),
        }
    if k.has_status:
        out[f"{item}/status"] = {
            "get": ops.op("get", f"read{p}{ns_word}{k.kind}Status",
                          f"read status of the specified {k.kind}", gvk, (), obj),
            "put": ops.op("put", f"replace{p}{ns_word}{k.kind}Status",
                          f"replace status of the specified {k.kind}", gvk, _WRITE_PARAMS, obj,
                          body=obj, created=True),
            "patch": ops.op("patch", f"patch{p}{ns_word}{k.kind}Status",
                            f"partially update status of the specified {k.kind}", gvk,
                            (*_WRITE_PARAMS, "force"), obj, body=patch_body,
                            body_types=patch_types, created=True),
            "parameters": ops.path_params(item_params, k.kind),
        }
    if k.scale is not None:
        scale_def = _get_catalog().name_of("V1Scale")
        scale, scale_gvk = _ref(scale_def, v3), _gvk(*_SCALE)
        out[f"{item}/scale"] = {
            "get": ops.op("get", f"read{p}{ns_word}{k.kind}Scale",
                          f"read scale of the specified {k.kind}", scale_gvk, (), scale),
            "put": ops.op("put", f"replace{p}{ns_word}{k.kind}Scale",
                          f"replace scale of the specified {k.kind}", scale_gvk, _WRITE_PARAMS,
                          scale, body=scale, created=True),
            "patch": ops.op("patch", f"patch{p}{ns_word}{k.kind}Scale",
                            f"partially update scale of the specified {k.kind}", scale_gvk,
                            (*_WRITE_PARAMS, "force"), scale, body=patch_body,
                            body_types=patch_types, created=True),
            "parameters": ops.path_params(item_params, k.kind),
        }
    if k.group == "" and k.plural == "pods":
        cat = _get_catalog()
        binding = _ref(cat.name_of("V1Binding"), v3)
        eviction = _ref(cat.name_of("V1Eviction"), v3)
        out[f"{item}/binding"] = {
            "post": ops.op("post", f"create{p}NamespacedPodBinding",
                           "create binding of a Pod", _gvk(*_BINDING), _WRITE_PARAMS, binding,
                           body=binding, created=True),
            "parameters": ops.path_params(item_params, "Binding"),
        }
        out[f"{item}/eviction"] = {
            "post": ops.op("post", f"create{p}NamespacedPodEviction",
                           "create eviction of a Pod", _gvk(*_EVICTION), _WRITE_PARAMS,
                           eviction, body=eviction, created=True),
            "parameters": ops.path_params(item_params, "Eviction"),
        }
        out[f"{item}/log"] = {
            "get": ops.op("get", f"read{p}NamespacedPodLog", "read log of the specified Pod",
                          gvk, ("container", "follow", "previous", "sinceSeconds",
                                "tailLines", "timestamps"), None, produces=("text/plain",)),
            "parameters": ops.path_params(item_params, "Pod"),
        }
        exec_gvk = _gvk("", "v1", "PodExecOptions")
        exec_params = ("command", "container", "stderr", "stdin", "stdout", "tty")
        out[f"{item}/exec"] = {
            "get": ops.op("connect", f"connect{p}GetNamespacedPodExec",
                          "connect GET requests to exec of Pod", exec_gvk, exec_params, None,
                          produces=("*/*",)),
            "post": ops.op("connect", f"connect{p}PostNamespacedPodExec",
                           "connect POST requests to exec of Pod", exec_gvk, exec_params, None,
                           produces=("*/*",)),
            "parameters": ops.path_params(item_params, "PodExecOptions"),
        }
    return out


def _review_paths(ops: _Ops, k: Kind, kind_def: str) -> dict[str, JSON]:
    """A review kind is create-only: one POST on its collection (shoal.api.reviews)."""
    scope = "/namespaces/{namespace}" if k.namespaced else ""
    obj = _ref(kind_def, ops.v3)
    ns_word = "Namespaced" if k.namespaced else ""
    return {f"/apis/{k.group}/{k.version}{scope}/{k.plural}": {
        "post": ops.op("post", f"create{_op_prefix(k.group, k.version)}{ns_word}{k.kind}",
                       f"create a {k.kind}", _gvk(k.group, k.version, k.kind), _WRITE_PARAMS,
                       obj, body=obj, created=True),
        "parameters": ops.path_params(["namespace"] if k.namespaced else [], k.kind),
    }}


# -- documents -----------------------------------------------------------------------------


@dataclass
class _Parts:
    """The paths and definitions of one group/version in one flavour."""

    paths: dict[str, JSON]
    definitions: dict[str, JSON]


# The catalog's caches are shared by every OpenAPIDocuments in the process.
_build_lock = threading.Lock()


def _release_build_memory() -> None:
    """Drop what only a build needs: the schema bodies and the models' descriptions.

    A document is kept compressed, so what a build allocated is all garbage after it;
    it is handed back to the OS too (glibc's ``malloc_trim``), or a node would keep
    the peak of its largest build for good.
    """
    with _build_lock:
        if _catalog is not None:
            _catalog.forget_bodies()
        schemas.release_docs()
    _trim_heap()


def _trim_heap() -> None:
    import ctypes  # here: a node that never builds a document does not load it

    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        return
    trim(0)


def _pack(doc: bytes) -> bytes:
    return zlib.compress(doc, 6)


def _build_parts(group: str, version: str, kinds: list[Kind], v3: bool) -> _Parts:
    cat = _get_catalog()
    with _build_lock:
        return _build_parts_locked(cat, group, version, kinds, v3)


def _build_parts_locked(
    cat: _Catalog, group: str, version: str, kinds: list[Kind], v3: bool
) -> _Parts:
    custom_defs: dict[str, JSON] = {}
    roots: set[str] = {"V1Status", "V1DeleteOptions", "V1ListMeta", "V1ObjectMeta",
                       "V1APIResourceList"}
    ops = _Ops(group, version, v3)
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    p = _op_prefix(group, version)
    resources_op = ops.op("get", f"get{p}APIResources", "get available resources", {}, (),
                          _ref(cat.name_of("V1APIResourceList"), v3))
    # Discovery is not a kind: drop the GVK/action extensions from that operation.
    for key in ("x-kubernetes-action", "x-kubernetes-group-version-kind"):
        resources_op.pop(key)
    paths: dict[str, JSON] = {f"{prefix}/": {"get": resources_op}}
    for k in sorted(kinds, key=lambda k: k.plural):
        if k in REVIEW_KINDS:
            model = cat.kind_models.get((k.group, k.version, k.kind))
            if model is not None:
                roots.add(model)
                paths.update(_review_paths(ops, k, cat.name_of(model)))
            continue
        if k.is_custom:
            defs = _crd_definitions(k, v3)
            custom_defs.update(defs)
            kind_def, list_def = list(defs)
            k_ops = _Ops(group, version, v3, custom=True)
        elif (k.group, k.kind) in HAND_WRITTEN_SCHEMAS:
            defs = _schema_definitions(k, HAND_WRITTEN_SCHEMAS[(k.group, k.kind)], v3)
            custom_defs.update(defs)
            kind_def, list_def = list(defs)
            k_ops = ops
        else:
            model = cat.kind_models.get((k.group, k.version, k.kind)) or schemas.model_for_kind(
                k.group, k.version, k.kind)
            list_model = cat.kind_models.get((k.group, k.version, k.list_kind)) or (
                schemas.model_for_kind(k.group, k.version, k.list_kind))
            if model is None or list_model is None:
                continue  # a built-in kind the client does not know: serve it undocumented
            roots |= {model, list_model}
            kind_def, list_def = cat.name_of(model), cat.name_of(list_model)
            k_ops = ops
        if k.scale is not None:
            roots.add("V1Scale")
        if k.group == "" and k.plural == "pods":
            roots |= {"V1Binding", "V1Eviction"}
        paths.update(_resource_paths(k_ops, k, kind_def, list_def))
    definitions: dict[str, JSON] = {}
    for model in cat.closure(roots):
        definitions[cat.name_of(model)] = cat.body(model, v3)
    definitions.update(_EXTRA_DEFINITIONS)
    definitions.update(custom_defs)
    return _Parts(paths, dict(sorted(definitions.items())))


_SECURITY_SCHEME = {
    "type": "apiKey",
    "name": "authorization",
    "in": "header",
    "description": "Bearer Token authentication",
}


def _v3_document(parts: _Parts) -> JSON:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": parts.paths,
        "components": {
            "schemas": parts.definitions,
            "securitySchemes": {"BearerToken": _SECURITY_SCHEME},
        },
        "security": [{"BearerToken": []}],
    }


def _signature(kinds: list[Kind]) -> bytes:
    rows = []
    for k in sorted(kinds, key=lambda k: (k.plural, k.kind)):
        scale = None
        if k.scale is not None:
            scale = [k.scale.spec_replicas_path, k.scale.status_replicas_path,
                     k.scale.label_selector_path]
        rows.append([k.group, k.version, k.kind, k.plural, k.singular, k.namespaced,
                     list(k.short_names), list(k.categories), k.has_status, scale,
                     k.crd_version])
    return orjson.dumps(rows, option=orjson.OPT_SORT_KEYS, default=str)


class OpenAPIDocuments:
    """The OpenAPI documents of a registry, cached and rebuilt as its kinds change.

    Builds are synchronous and take tens of milliseconds per group/version (about
    50 ms for apps/v1 in a fresh process, 130 ms for the whole v2 document), so a
    document is built when it is first asked for. Built documents are kept
    zlib-compressed (about a seventh of their size). Safe to call from several threads.
    """

    def __init__(self, registry: KindRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._generation = -1
        self._signatures: dict[tuple[str, str], bytes] = {}
        self._hashes: dict[tuple[str, str], str] = {}
        # Compressed documents keyed by (group, version), with the signature they are of.
        self._v3_docs: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._v2: tuple[bytes, bytes, bytes] | None = None  # (signature, json, protobuf)

    def _refresh(self) -> None:
        """Recompute the per-group/version signatures when the registry changed."""
        generation = self._registry.generation
        if generation == self._generation:
            return
        signatures: dict[tuple[str, str], bytes] = {}
        for group, versions in served_groups(self._registry).items():
            for version in versions:
                kinds = served_kinds(self._registry, group, version)
                if kinds:
                    signatures[(group, version)] = _signature(kinds)
        client = schemas.client_version()
        self._hashes = {
            gv: hashlib.sha512(
                b"\0".join([_FORMAT.encode(), client.encode(), sig])
            ).hexdigest().upper()
            for gv, sig in signatures.items()
        }
        self._signatures = signatures
        self._generation = generation

    def warm(self) -> None:
        """Load the models' fields and compute the documents' hashes (a few ms).

        Documents themselves are built on first request: holding them all from the
        start cost a node about 10 MB of RSS, and building one takes tens of ms.
        """
        with self._lock:
            self._refresh()
        schemas.has_model("V1Pod")

    def hash_of(self, group: str, version: str) -> str:
        """The ``hash`` of a group/version's v3 document (its ETag); ``""`` if not served.

        It is derived from the kinds the document describes, not from its bytes, so it
        is cheap and the same on every node that serves the same kinds.
        """
        with self._lock:
            self._refresh()
            return self._hashes.get((group, version), "")

    def v3_index(self) -> JSON:
        """The body of ``/openapi/v3``: where each group/version's document is."""
        with self._lock:
            self._refresh()
            paths = {}
            for (group, version), digest in sorted(self._hashes.items()):
                rel = f"apis/{group}/{version}" if group else f"api/{version}"
                paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
            return {"paths": paths}

    def v3_group_version(self, group: str, version: str) -> bytes | None:
        """The JSON document at ``/openapi/v3/api/v1`` or ``/openapi/v3/apis/G/V``."""
        with self._lock:
            self._refresh()
            sig = self._signatures.get((group, version))
            if sig is None:
                return None
            cached = self._v3_docs.get((group, version))
            if cached is not None and cached[0] == sig:
                return zlib.decompress(cached[1])
            kinds = served_kinds(self._registry, group, version)
            doc = orjson.dumps(_v3_document(_build_parts(group, version, kinds, v3=True)))
            self._v3_docs[(group, version)] = (sig, _pack(doc))
        _release_build_memory()
        return doc

    def _v2_build(self) -> tuple[bytes, bytes]:
        """The compressed JSON and protobuf documents."""
        with self._lock:
            self._refresh()
            sig = orjson.dumps(sorted(self._hashes.items()))
            if self._v2 is not None and self._v2[0] == sig:
                return self._v2[1], self._v2[2]
            json_doc, pb_doc = self._v2_documents()
            self._v2 = (sig, json_doc, pb_doc)
        _release_build_memory()
        return json_doc, pb_doc

    def _v2_documents(self) -> tuple[bytes, bytes]:
        paths: dict[str, JSON] = {}
        definitions: dict[str, JSON] = {}
        for group, version in sorted(self._signatures):
            kinds = served_kinds(self._registry, group, version)
            parts = _build_parts(group, version, kinds, v3=False)
            paths.update(parts.paths)
            definitions.update(parts.definitions)
        doc: JSON = {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": GIT_VERSION},
            "paths": dict(sorted(paths.items())),
            "definitions": dict(sorted(definitions.items())),
            "securityDefinitions": {"BearerToken": _SECURITY_SCHEME},
            "security": [{"BearerToken": []}],
        }
        return _pack(orjson.dumps(doc)), _pack(_pb_document(doc))

    def v2_hash(self) -> str:
        """An ETag for ``/openapi/v2``: it changes whenever any group/version's hash does."""
        with self._lock:
            self._refresh()
            joined = "".join(digest for _, digest in sorted(self._hashes.items()))
            return hashlib.sha512(joined.encode()).hexdigest().upper()

    def v2(self) -> bytes:
        """The Swagger 2.0 JSON document of every group/version (``/openapi/v2``)."""
        return zlib.decompress(self._v2_build()[0])

    def v2_protobuf(self) -> bytes:
        """The same document as a gnostic ``openapi_v2.Document`` protobuf.

        Serve it when the ``Accept`` header names :data:`V2_PROTOBUF_CONTENT_TYPE`:
        kubectl asks for nothing else, and fails to parse JSON there.
        """
        return zlib.decompress(self._v2_build()[1])


# The Content-Type of the protobuf answer. Clients ask with this name or with the older
# "...spec.v2@v1.0+protobuf", but Go's MIME parser rejects the "@" in a response, so
# kube-apiserver (and we) always answer with this spelling.
V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def wants_v2_protobuf(accept: str | None) -> bool:
    """Whether a request for ``/openapi/v2`` asks for the protobuf encoding (kubectl does)."""
    return accept is not None and "proto-openapi.spec.v2" in accept and "protobuf" in accept


# -- the protobuf encoding of the v2 document (gnostic openapiv2/OpenAPIv2.proto) -----------
#
# Only the messages kubectl reads are encoded: the document, info, paths with their
# operations and parameters, and the definitions with their vendor extensions.


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _pb_str(field: int, value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        return b""
    return _pb_bytes(field, value.encode())


def _pb_strs(field: int, values: Any) -> bytes:
    if not isinstance(values, list):
        return b""
    return b"".join(_pb_bytes(field, v.encode()) for v in values if isinstance(v, str))


def _pb_bool(field: int, value: Any) -> bytes:
    return _varint(field << 3) + b"\x01" if value is True else b""


def _pb_int(field: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        return b""
    return _varint(field << 3) + _varint(value)


def _pb_double(field: int, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return b""
    return _varint(field << 3 | 1) + struct.pack("<d", float(value))


def _pb_any(value: Any) -> bytes:
    # Any{yaml = 2}; JSON is YAML, and kubectl reads the extensions with a YAML parser.
    return _pb_str(2, orjson.dumps(value).decode())


def _pb_extensions(field: int, obj: JSON) -> bytes:
    return b"".join(
        _pb_bytes(field, _pb_str(1, k) + _pb_bytes(2, _pb_any(v)))  # NamedAny{name, value}
        for k, v in obj.items() if k.startswith("x-")
    )


def _pb_schema(s: Any) -> bytes:
    if not isinstance(s, dict):
        return b""
    out = [
        _pb_str(1, s.get("$ref")), _pb_str(2, s.get("format")), _pb_str(3, s.get("title")),
        _pb_str(4, s.get("description")),
    ]
    if "default" in s:
        out.append(_pb_bytes(5, _pb_any(s["default"])))
    out += [
        _pb_double(6, s.get("multipleOf")), _pb_double(7, s.get("maximum")),
        _pb_bool(8, s.get("exclusiveMaximum")), _pb_double(9, s.get("minimum")),
        _pb_bool(10, s.get("exclusiveMinimum")), _pb_int(11, s.get("maxLength")),
        _pb_int(12, s.get("minLength")), _pb_str(13, s.get("pattern")),
        _pb_int(14, s.get("maxItems")), _pb_int(15, s.get("minItems")),
        _pb_bool(16, s.get("uniqueItems")), _pb_int(17, s.get("maxProperties")),
        _pb_int(18, s.get("minProperties")), _pb_strs(19, s.get("required")),
    ]
    if isinstance(s.get("enum"), list):
        out += [_pb_bytes(20, _pb_any(v)) for v in s["enum"]]
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(_pb_bytes(21, _pb_bytes(1, _pb_schema(extra))))
    elif isinstance(extra, bool):
        out.append(_pb_bytes(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00")))
    typ = s.get("type")
    if isinstance(typ, str):
        out.append(_pb_bytes(22, _pb_str(1, typ)))
    items = s.get("items")
    if isinstance(items, dict):
        items = [items]
    if isinstance(items, list):
        out.append(_pb_bytes(23, b"".join(_pb_bytes(1, _pb_schema(i)) for i in items)))
    if isinstance(s.get("allOf"), list):
        out += [_pb_bytes(24, _pb_schema(x)) for x in s["allOf"]]
    props = s.get("properties")
    if isinstance(props, dict):
        out.append(_pb_bytes(25, _pb_named_schemas(props)))
    out.append(_pb_bool(27, s.get("readOnly")))
    if "example" in s:
        out.append(_pb_bytes(30, _pb_any(s["example"])))
    out.append(_pb_extensions(31, s))
    return b"".join(out)


def _pb_named_schemas(schemas: JSON) -> bytes:
    # Properties/Definitions{repeated NamedSchema additional_properties = 1}
    return b"".join(
        _pb_bytes(1, _pb_str(1, name) + _pb_bytes(2, _pb_schema(s))) for name, s in schemas.items()
    )


def _pb_parameter(p: JSON) -> bytes:
    if p.get("in") == "body":
        body = (_pb_str(1, p.get("description")) + _pb_str(2, p.get("name")) + _pb_str(3, "body")
                + _pb_bool(4, p.get("required")) + _pb_bytes(5, _pb_schema(p.get("schema"))))
        return _pb_bytes(1, _pb_bytes(1, body))  # ParametersItem{Parameter{BodyParameter}}
    if p.get("in") == "path":
        sub = (_pb_bool(1, p.get("required")) + _pb_str(2, "path")
               + _pb_str(3, p.get("description")) + _pb_str(4, p.get("name"))
               + _pb_str(5, p.get("type")) + _pb_bool(19, p.get("uniqueItems")))
        nonbody = _pb_bytes(4, sub)
    else:
        sub = (_pb_bool(1, p.get("required")) + _pb_str(2, p.get("in"))
               + _pb_str(3, p.get("description")) + _pb_str(4, p.get("name"))
               + _pb_str(6, p.get("type")) + _pb_bool(20, p.get("uniqueItems")))
        nonbody = _pb_bytes(3, sub)
    # ParametersItem{parameter = 1: Parameter{non_body_parameter = 2: NonBodyParameter{...}}}
    return _pb_bytes(1, _pb_bytes(2, nonbody))


def _pb_operation(op: JSON) -> bytes:
    out = [_pb_strs(1, op.get("tags")), _pb_str(3, op.get("description")),
           _pb_str(5, op.get("operationId")), _pb_strs(6, op.get("produces")),
           _pb_strs(7, op.get("consumes"))]
    out += [_pb_bytes(8, _pb_parameter(p)) for p in op.get("parameters", [])]
    responses = b""
    for code, r in (op.get("responses") or {}).items():
        resp = _pb_str(1, r.get("description"))
        if isinstance(r.get("schema"), dict):
            resp += _pb_bytes(2, _pb_bytes(1, _pb_schema(r["schema"])))  # SchemaItem{schema}
        # NamedResponseValue{name, value: ResponseValue{response = 1}}
        responses += _pb_bytes(1, _pb_str(1, code) + _pb_bytes(2, _pb_bytes(1, resp)))
    out.append(_pb_bytes(9, responses))
    out.append(_pb_extensions(13, op))
    return b"".join(out)


_PB_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _pb_path_item(item: JSON) -> bytes:
    out = [_pb_bytes(n, _pb_operation(item[m])) for m, n in _PB_METHODS.items() if m in item]
    out += [_pb_bytes(9, _pb_parameter(p)) for p in item.get("parameters", [])]
    return b"".join(out)


def _pb_document(doc: JSON) -> bytes:
    info = doc.get("info") or {}
    paths = b"".join(
        _pb_bytes(2, _pb_str(1, name) + _pb_bytes(2, _pb_path_item(item)))
        for name, item in (doc.get("paths") or {}).items()
    )
    return b"".join([
        _pb_str(1, doc.get("swagger")),
        _pb_bytes(2, _pb_str(1, info.get("title")) + _pb_str(2, info.get("version"))),
        _pb_bytes(8, paths),
        _pb_bytes(9, _pb_named_schemas(doc.get("definitions") or {})),
    ])
