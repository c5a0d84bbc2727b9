"""Hostile input gets a 4xx and never reaches the replica: deep nesting, YAML that JSON
cannot hold, forged continue tokens. The node keeps serving and its watches keep flowing."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import orjson
import pytest

from shoal.api import bodies
from shoal.api.errors import ApiError
from shoal.api.resources import _decode_continue
from shoal.model.kinds import KindRegistry
from shoal.store.objects import MAX_OBJECT_DEPTH, Invalid, ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
NS, CM, DEPLOY = (REG.by_kind(*k) for k in (("v1", "Namespace"), ("v1", "ConfigMap"),
                                            ("apps/v1", "Deployment")))


def _nested(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels):
        inner = {"a": inner}
    return inner


def _deployment(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "deep"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "unknownField": extra,
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }


@pytest.mark.parametrize("levels", [60, 300, 1000])
def test_a_json_body_nested_too_deeply_is_a_400(levels: int) -> None:
    # orjson writes at most 255 levels: deeper bodies are spelt out.
    raw = orjson.dumps(_deployment(_nested(levels))) if levels < 200 else (
        b'{"a":' * levels + b'1' + b'}' * levels)
    with pytest.raises(ApiError) as e:
        bodies.parse(raw, "application/json")
    assert e.value.code == 400


def test_a_yaml_body_nested_too_deeply_for_the_parser_is_a_400_not_a_crash() -> None:
    raw = b"a: " + b"[" * 5000 + b"]" * 5000
    with pytest.raises(ApiError) as e:
        bodies.parse(raw, "application/yaml")
    assert e.value.code == 400


@pytest.mark.parametrize("doc", [
    b"data:\n  a: !!binary aGVsbG8=\n",
    b"data: !!set {a, b}\n",
    b"data:\n  ~: one\n",
    b"data:\n  a: .inf\n",
    b"data:\n  a: .nan\n",
])
def test_yaml_values_that_json_cannot_hold_are_a_400(doc: bytes) -> None:
    with pytest.raises(ApiError) as e:
        bodies.parse(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n" + doc,
                     "application/yaml")
    assert e.value.code == 400


def test_a_yaml_timestamp_stays_the_string_it_was_written_as() -> None:
    obj = bodies.parse(b"metadata:\n  annotations:\n    t: 2020-01-01T00:00:00Z\n",
                       "application/yaml")
    assert obj["metadata"]["annotations"]["t"] == "2020-01-01T00:00:00Z"


@pytest.mark.parametrize("payload", [
    b'{"rv": 1e308, "ns": "", "name": "x"}',
    b'{"rv": -1, "ns": "", "name": "x"}',
    b'{"rv": 1180591620717411303424, "ns": "", "name": "x"}',
    b'{"rv": "12", "ns": "", "name": "x"}',
    b'{"rv": 3, "ns": ["a"], "name": "x"}',
    b'{"rv": true, "ns": "", "name": "x"}',
])
def test_a_forged_continue_token_is_a_400(payload: bytes) -> None:
    token = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    with pytest.raises(ApiError) as e:
        _decode_continue(token)
    assert e.value.code == 400


async def test_a_deep_object_is_refused_before_it_takes_a_revision_and_watches_keep_flowing(
        ) -> None:
    assert NS and CM and DEPLOY
    s = ObjectStore(Replica(None, "pi-1"), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    sub = s.replica.subscribe(lambda c: True)
    before = s.replica.revision
    with pytest.raises(Invalid) as e:
        await s.create(DEPLOY, _deployment(_nested(MAX_OBJECT_DEPTH + 5)), "default")
    assert "levels of nesting" in str(e.value)
    assert s.replica.revision == before
    assert s.replica.get(DEPLOY.resource, "default", "deep") is None
    # The revision stream is not wedged: the next write reaches a watcher at once.
    await s.create(CM, {"metadata": {"name": "after"}, "data": {"k": "v"}}, "default")
    change = await asyncio.wait_for(sub.queue.get(), 2.0)
    assert change is not None and change.name == "after"


async def test_a_patch_cannot_deepen_an_object_past_the_limit_one_level_at_a_time() -> None:
    assert NS and CM
    s = ObjectStore(Replica(None, "pi-1"), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    ok = {"metadata": {"name": "cm", "annotations": {}}, "data": {}}
    await s.create(CM, ok, "default")
    deep = copy.deepcopy(s.get(CM, "default", "cm"))
    deep["deepField"] = _nested(MAX_OBJECT_DEPTH)
    with pytest.raises(Invalid):
        await s.update(CM, deep, "default", "cm")
    assert "deepField" not in s.get(CM, "default", "cm")
