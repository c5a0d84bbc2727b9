"""The replica keeps parsed documents only for the objects written last; the rest are
parsed again from their bytes, with the same result."""

from __future__ import annotations

from typing import Any

from shoal.store import replica as replica_module
from shoal.store.objects import key_fn
from shoal.store.replica import Replica


def cm(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": {"k": value}}


async def test_documents_are_kept_for_the_last_objects_written_only() -> None:
    kept = replica_module.DOCUMENTS_KEPT
    r = Replica(None, "n1")
    kf = key_fn("", "ConfigMap")
    for i in range(kept + 50):
        _, durable = r.put("configmaps", "default", f"c{i}", cm(f"c{i}", "a"), kf)
        await durable
    parsed = [k for k, e in r.iter_entries("configmaps") if e.doc is not None]
    assert len(parsed) == kept
    assert ("default", "c0") not in parsed and ("default", f"c{kept + 49}") in parsed
    # An object whose document was dropped is written as before (parsed from its bytes).
    stored, durable = r.put("configmaps", "default", "c0", cm("c0", "b"), kf)
    await durable
    assert stored is not None and stored["data"] == {"k": "b"}
    entry = r.entry("configmaps", "default", "c0")
    assert entry is not None and entry.document().value() == {**cm("c0", "b")}
