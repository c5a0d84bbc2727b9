"""Generate the schemas of the built-in kinds from the ``kubernetes`` Python client.

Shoal does not import the client at run time (it is a dev dependency): the OpenAPI
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

Re-run it after upgrading the client: ``.venv/bin/python scripts/generate_schemas.py``.
The output depends only on the client's version (keys sorted, gzip without a timestamp).
"""

from __future__ import annotations

import gzip
import inspect
import json
import sys
import types
import typing
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
    print(f"kubernetes {version}: {len(fields)} models; models.json.gz {a:,} bytes, "
          f"docs.json.gz {b:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
