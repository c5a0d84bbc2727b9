"""Generate the schemas of the built-in kinds from the ``kubernetes`` Python client and
the ``k8s-proto`` descriptors.

Shoal imports neither at run time (they are dev dependencies): the OpenAPI
documents (:mod:`shoal.api.openapi`) and the unknown-field checks
(:mod:`shoal.model.validation.client_models`) read what this script writes into
``src/shoal/model/schemas/``:

- ``models.json.gz``: every model class of the client (``V1PodSpec``...), its fields
  in the client's order as ``[json name, type, required]``. Types are the client's
  ``openapi_types`` strings (``List[V1Container]``, ``Dict[str, str]``, ``str``...),
  except that a field the client types ``object`` whose annotation admits ``int`` and
  ``str`` is written ``IntOrString``.
- ``docs.json.gz``: per model, its description and those of its fields, in the same
  order; only the OpenAPI documents need them, so they are loaded apart.
- ``protobuf.json.gz``: the messages of the ``k8s-proto`` package's descriptors (core/v1,
  apimachinery, runtime.Unknown), each field as ``[number, JSON name, type, repeated,
  map]``, for :mod:`shoal.api.protobuf` (which adds the messages k8s-proto lacks).

Re-run it after upgrading the client: ``.venv/bin/python scripts/generate_schemas.py``.
The output depends only on the versions of the client and k8s-proto (keys sorted, gzip without a timestamp).
"""

from __future__ import annotations

import ast
import gzip
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "src" / "shoal" / "model" / "schemas"
INT_OR_STRING = "IntOrString"


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types a (possibly Optional/Annotated/Union) annotation admits."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: set[Any] = set()
        for arg in typing.get_args(annotation):
            out |= _leaf_types(arg)
        return out
    return {annotation}


def _class_doc(cls: Any) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return doc.partition("\nAttributes:")[0].strip()


def _model(cls: Any) -> tuple[list[list[Any]], list[Any]]:
    fields: list[list[Any]] = []
    descriptions: list[str] = []
    for attr, spec in cls.openapi_types.items():
        f = cls.model_fields.get(attr) or cls.model_fields.get("var_" + attr.lstrip("_"))
        annotation = f.annotation if f is not None else None
        if spec == "object" and {int, str} <= _leaf_types(annotation):
            spec = INT_OR_STRING
        fields.append([cls.attribute_map.get(attr, attr), spec,
                       int(bool(f is not None and f.is_required()))])
        descriptions.append((f.description if f is not None else None) or "")
    return fields, [_class_doc(cls), descriptions]


# -- protobuf: k8s-proto's descriptors ---------------------------------------------------------


# FieldDescriptorProto.Type numbers (descriptor.proto) to shoal.api.protobuf's type names.
_DESCRIPTOR_TYPES: dict[int, str] = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
    8: "bool", 9: "string", 11: "message", 12: "bytes", 13: "uint32", 14: "enum",
    15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64",
}
_LABEL_REPEATED = 3


def _serialized_descriptors(root: Path) -> Iterator[bytes]:
    """The ``serialized_pb`` literal of each generated module, read without running it."""
    for path in sorted(root.rglob("generated_pb2.py")):
        source = path.read_text(encoding="utf-8")
        # Parsing only the serialized_pb line is 10x faster than the whole module (600 kB for
        # core/v1); the whole module is the fallback for a layout we did not expect.
        line = next((ln for ln in source.splitlines() if ln.lstrip().startswith("serialized_pb=")),
                    None)
        try:
            tree = ast.parse("f(" + line.strip().rstrip(",") + ")" if line else source)
        except SyntaxError:
            tree = ast.parse(source, str(path))
        blob = next((b for node in ast.walk(tree) if (b := _literal(node)) is not None), None)
        if blob is not None:
            yield blob


def _literal(node: ast.AST) -> bytes | None:
    if not (isinstance(node, ast.keyword) and node.arg == "serialized_pb"):
        return None
    value = node.value
    # protoc of that era wrote _b('...') (a latin-1 str); later ones write b'...'.
    if isinstance(value, ast.Call) and value.args:
        value = value.args[0]
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value.encode("latin-1")
    if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
        return value.value
    return None


def _k8s_proto_root() -> Path | None:
    spec = importlib.util.find_spec("k8s")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    # Another distribution may own the name "k8s"; k8s-proto is the one with these files.
    return root if (root / "io" / "api" / "core" / "v1" / "generated_pb2.py").exists() else None


def _descriptor_messages(blobs: Iterator[bytes]) -> dict[str, list[list[Any]]]:
    """Each message's fields as ``[number, JSON name, type, repeated, map]``."""
    from google.protobuf import descriptor_pb2  # type: ignore[import-untyped,unused-ignore]

    raw: dict[str, Any] = {}  # full name -> DescriptorProto

    def walk(prefix: str, descriptors: Any) -> None:
        for d in descriptors:
            full = f"{prefix}.{d.name}"
            raw[full] = d
            walk(full, d.nested_type)

    for blob in blobs:
        fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
        walk(fd.package, fd.message_type)

    out: dict[str, list[list[Any]]] = {}
    for full, d in raw.items():
        if d.options.map_entry:
            continue
        fields: list[list[Any]] = []
        for f in d.field:
            t = _DESCRIPTOR_TYPES.get(f.type)
            if t is None:
                continue  # groups: never used by Kubernetes; an unknown number if sent
            type_name = f.type_name.lstrip(".")
            entry = raw.get(type_name) if t == "message" else None
            if entry is not None and entry.options.map_entry:
                value = next(v for v in entry.field if v.number == 2)
                vt = _DESCRIPTOR_TYPES[value.type]
                fields.append([f.number, f.name,
                               value.type_name.lstrip(".") if vt == "message" else vt, 0, 1])
                continue
            fields.append([f.number, f.name, type_name if t == "message" else t,
                           int(f.label == _LABEL_REPEATED), 0])
        out[full] = fields
    return out


def _write(path: Path, value: Any) -> int:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    with path.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0,
                                              compresslevel=9, filename="") as gz:
        gz.write(raw)
    return path.stat().st_size


def main() -> int:
    import kubernetes
    import kubernetes.client.models as models

    fields: dict[str, list[list[Any]]] = {}
    docs: dict[str, list[Any]] = {}
    for name in sorted(dir(models)):
        cls = getattr(models, name)
        if not (inspect.isclass(cls) and isinstance(getattr(cls, "openapi_types", None), dict)
                and isinstance(getattr(cls, "attribute_map", None), dict)):
            continue
        fields[name], docs[name] = _model(cls)
    OUT.mkdir(parents=True, exist_ok=True)
    version = str(kubernetes.__version__)
    a = _write(OUT / "models.json.gz", {"client_version": version, "models": fields})
    b = _write(OUT / "docs.json.gz", {"client_version": version, "docs": docs})
    root = _k8s_proto_root()
    if root is None:
        print("k8s-proto is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 1
    messages = _descriptor_messages(_serialized_descriptors(root))
    c = _write(OUT / "protobuf.json.gz", {"k8s_proto": importlib.metadata.version("k8s-proto"),
                                          "messages": messages})
    print(f"kubernetes {version}: {len(fields)} models; models.json.gz {a:,} bytes, "
          f"docs.json.gz {b:,} bytes; k8s-proto: {len(messages)} messages, "
          f"protobuf.json.gz {c:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
