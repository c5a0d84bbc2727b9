"""The schemas of the built-in kinds, generated from the ``kubernetes`` Python client.

``scripts/generate_schemas.py`` writes them (the client is a dev dependency only):
``models.json.gz`` holds each model class's fields (JSON name, type, required) and
``docs.json.gz`` their descriptions; ``protobuf.json.gz`` holds the protobuf messages of
the ``k8s-proto`` descriptors (for :mod:`shoal.api.protobuf`). Model names are the client's (``V1PodSpec``,
``CoreV1Event``), and so are type strings (``List[V1Container]``,
``Dict[str, str]``, ``str``, ``int``, ``datetime``, ``object`` for free-form JSON),
with :data:`INT_OR_STRING` for an int-or-string field.

The fields stay loaded (the unknown-field checks of every Strict write read them);
the descriptions are read only while OpenAPI documents are built, and are dropped
with :func:`release_docs` once they are.
"""

from __future__ import annotations

import functools
import gzip
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

INT_OR_STRING = "IntOrString"


@dataclass(frozen=True, slots=True)
class ModelField:
    json_name: str
    type: str
    required: bool


def _read(name: str) -> Any:
    return orjson.loads(gzip.decompress(resources.files(__name__).joinpath(name).read_bytes()))


@functools.cache
def _models() -> tuple[str, dict[str, tuple[ModelField, ...]]]:
    data = _read("models.json.gz")
    intern = sys.intern
    models = {
        intern(name): tuple(ModelField(intern(j), intern(t), bool(r)) for j, t, r in fields)
        for name, fields in data["models"].items()
    }
    return str(data["client_version"]), models


@functools.cache
def _docs() -> dict[str, tuple[str, tuple[str, ...]]]:
    return {name: (doc, tuple(fields)) for name, (doc, fields) in _read("docs.json.gz")["docs"].items()}


def client_version() -> str:
    """The version of the ``kubernetes`` client the schemas were generated from."""
    return _models()[0]


def has_model(name: str) -> bool:
    return name in _models()[1]


def model_for_kind(group: str, version: str, kind: str) -> str | None:
    """The model of a built-in kind: ``CoreV1Event`` wins over ``V1Event``, as in the client."""
    v = version[:1].upper() + version[1:]
    leaf = group.split(".")[0] if group else "core"
    for name in (f"{leaf.capitalize()}{v}{kind}", f"{v}{kind}"):
        if has_model(name):
            return name
    return None


def model_fields(name: str) -> tuple[ModelField, ...] | None:
    """The fields of a model class, in the client's order; None for an unknown model."""
    return _models()[1].get(name)


def model_doc(name: str) -> str:
    """The description of a model class ("" when unknown)."""
    entry = _docs().get(name)
    return entry[0] if entry is not None else ""


def field_docs(name: str) -> tuple[str, ...]:
    """The descriptions of a model's fields, in the order of :func:`model_fields`."""
    entry = _docs().get(name)
    return entry[1] if entry is not None else ()


def protobuf_messages() -> dict[str, list[list[Any]]]:
    """The protobuf messages of k8s-proto's descriptors, by full name: each field as
    ``[number, JSON name, type, repeated, map]`` (read anew each call: callers keep them)."""
    messages: dict[str, list[list[Any]]] = _read("protobuf.json.gz")["messages"]
    return messages


def release_docs() -> None:
    """Forget the descriptions (read again on the next use)."""
    _docs.cache_clear()
