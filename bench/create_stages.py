"""What each stage of a pod create costs, in process and without HTTP: the best of many
runs, so that it reads the code's cost and not the machine's load (a shared machine
slows a whole ``wrk`` run several-fold; the minimum of short runs stays put).

The stages are the ones ``ResourceHandlers.create`` and ``ObjectStore.create`` run, on
the pod of ``bench/api_single_node.py`` with a node's store admission hooks (so it gets
the ServiceAccount's token volume, tolerations and a priority as on a node). The HTTP
server, TLS, authentication and the SQLite writer thread are measured by
``bench/api_load_cpu.py`` and py-spy instead (``docs/performance.md``).

``python -m bench.create_stages [--runs=N]`` (``make bench BENCH_ARGS=--only=create_stages``)
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from shoal.api.admission import default_tolerations
from shoal.api.limit_ranger import LimitRanger
from shoal.api.priority_admission import PriorityAdmission
from shoal.api.quota_admission import QuotaAdmission
from shoal.control.service_accounts import admit_pod
from shoal.model import field_schema, managed_fields
from shoal.model.defaults import apply_defaults
from shoal.model.field_ownership import Write, created_fields_v1, update
from shoal.model.kinds import KindRegistry
from shoal.model.validation import unknown_fields, validate
from shoal.store.objects import MAX_OBJECT_DEPTH, ObjectStore, _deeper_than, key_fn
from shoal.store.persistence import Row
from shoal.store.replica import Replica

BODY = (b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bench-0-1","labels":{"app":"bench"}},'
        b'"spec":{"schedulerName":"bench-unscheduled","containers":[{"name":"c","image":'
        b'"busybox:1.36","command":["sleep","3600"],"resources":{"requests":{"cpu":"10m"}}}]}}')


def _best_us(f: Callable[[], Any], runs: int) -> float:
    f()
    return 1e6 * min(timeit.repeat(f, number=50, repeat=runs)) / 50


async def _measure(work: Path, runs: int) -> dict[str, float]:
    kinds = KindRegistry()
    replica = Replica(work / "data", "bench-1")
    store = ObjectStore(replica, kinds)
    store.admission += [lambda kind, obj: admit_pod(kind, obj, replica), default_tolerations,
                        PriorityAdmission(replica), LimitRanger(replica), QuotaAdmission(replica)]
    namespace, pod = kinds.by_kind("v1", "Namespace"), kinds.by_kind("v1", "Pod")
    assert namespace is not None and pod is not None
    await store.create(namespace, {"metadata": {"name": "default"}})
    body = orjson.loads(BODY)
    stored = await store.create(pod, body, "default")
    root = field_schema.for_kind(pod)
    write = Write("kubectl", "v1", stored["metadata"]["creationTimestamp"], "", True)

    body["metadata"]["namespace"] = "default"

    def hooks() -> None:
        obj = copy.deepcopy(body)
        for admit in store.admission:
            admit(pod, obj)

    def track() -> None:  # what any other write does: members, set, diff, FieldsV1
        owners = update(None, stored, {}, root, write)
        managed_fields.encode(managed_fields.cap_updates(owners, write.now))

    def track_create() -> None:  # what a create does (api.field_manager.tracker)
        created_fields_v1(stored, root, write)

    names = iter(range(10**9))

    def put() -> None:
        value = {**stored, "metadata": {**stored["metadata"], "name": f"p-{next(names)}"}}
        replica.put("pods", "default", value["metadata"]["name"], value, key_fn("", "Pod"))

    specs = iter(range(10**9))

    def new_spec(obj: dict[str, Any]) -> dict[str, Any]:
        # A spec no create had before: the memos of shoal.model.value_memo miss (a pod of a
        # template seen before hits them: the rows without "a new spec").
        return {**obj, "spec": {**obj["spec"], "hostname": f"h{next(specs)}"}}

    copying = _best_us(lambda: copy.deepcopy(body), runs)  # the two stages change a copy
    rows = [Row("pods", "default", f"r-{i}", i, orjson.dumps(stored), orjson.dumps(stored))
            for i in range(4)]
    out = {
        "parse the body (orjson)": _best_us(lambda: orjson.loads(BODY), runs),
        "unknown fields": _best_us(lambda: unknown_fields(pod, body), runs),
        "unknown fields (a new spec)": _best_us(lambda: unknown_fields(pod, new_spec(body)),
                                                runs),
        "copy the body (prepare_create's JSON round trip)":
            _best_us(lambda: orjson.loads(orjson.dumps(body)), runs),
        "store admission hooks": _best_us(hooks, runs) - copying,
        "defaulting": _best_us(lambda: apply_defaults(pod, copy.deepcopy(body)), runs) - copying,
        "depth check": _best_us(lambda: _deeper_than(stored, MAX_OBJECT_DEPTH), runs),
        "validation": _best_us(lambda: validate(pod, stored, None), runs),
        "validation (a new spec)": _best_us(lambda: validate(pod, new_spec(stored), None), runs),
        "managed fields (a create's entry, straight from the object)":
            _best_us(track_create, runs),
        "managed fields (the same, a new spec)":
            _best_us(lambda: created_fields_v1(new_spec(stored), root, write), runs),
        "managed fields (the same entry the general way: update and encode)":
            _best_us(track, runs),
        "Replica.put (CRDT document, bytes, value, queueing)": _best_us(put, runs),
        "the answer's JSON": _best_us(lambda: orjson.dumps(stored), runs),
    }
    # The queued puts commit on the writer thread first: write_sync uses the same
    # connection from this thread, and a commit of theirs in between failed it.
    while replica.durable_revision < replica.revision:
        await asyncio.sleep(0.05)
    out["SQLite commit of 4 creates, per create (wall time, fsync included)"] = _best_us(
        lambda: replica.persistence.write_sync(rows, {"revision": "1"}), runs) / 4
    replica.close()
    return {k: round(v, 1) for k, v in out.items()}


def run(quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    runs = runs or (5 if quick else 20)
    with tempfile.TemporaryDirectory(prefix="shoal-stages-") as d:
        stages = asyncio.run(_measure(Path(d), runs))
    return {"us_best_of_runs": stages, "runs": runs}


if __name__ == "__main__":
    n = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--runs=")), None)
    print(json.dumps(run(runs=n), indent=2))
