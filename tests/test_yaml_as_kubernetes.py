"""YAML bodies are typed as kubectl and the apiserver type them (sigs.k8s.io/yaml over
go-yaml v2's resolve.go), not as PyYAML's YAML 1.1 resolvers do: ``1:20`` is a string
(PyYAML: the base-60 integer 80), ``0o17`` and ``1e3`` are numbers, ``y`` is true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shoal.api import bodies
from shoal.api.authentication import Credentials
from shoal.api.errors import ApiError
from shoal.api.server import ApiServer
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


def value(text: str) -> Any:
    return bodies.parse(f"a: {text}\n".encode(), "application/yaml")["a"]


@pytest.mark.parametrize(("text", "want"), [
    # Base 60 is gone: strings, as go-yaml reads them (PyYAML: 80 and 80.5).
    ("1:20", "1:20"), ("1:20.5", "1:20.5"), ("190:20:30", "190:20:30"),
    # Go's ParseInt(s, 0, 64) once every _ is dropped.
    ("0o17", 15), ("0O17", 15), ("0x1F", 31), ("0x_1F", 31), ("017", 15), ("0b101", 5),
    ("-0b1", -1), ("1_000", 1000), ("+1", 1), ("-0", 0), ("0x", "0x"), ("_1", "_1"),
    ("9223372036854775807", 2**63 - 1), ("18446744073709551615", 2**64 - 1),
    # Floats (yamlStyleFloat: no dot needed, the exponent's sign optional); through JSON
    # an integral one arrives as an integer, as Go writes it.
    (".5", 0.5), ("-.5", -0.5), ("+.5", 0.5), ("1e3", 1000), ("1.5e3", 1500),
    ("1.0", 1), ("1.5", 1.5), ("08", 8), ("1.", 1), ("1e-2", 0.01), ("1e400", "1e400"),
    (".e3", ".e3"), (".", "."),
    # go-yaml v2's booleans and nulls, y and n included.
    ("yes", True), ("Yes", True), ("on", True), ("ON", True), ("y", True), ("Y", True),
    ("true", True), ("no", False), ("off", False), ("n", False), ("N", False),
    ("False", False), ("tRue", "tRue"), ("~", None), ("null", None), ("Null", None),
    # PyYAML's value tag: no safe constructor knew it (a 400); a string for go-yaml.
    ("=", "="),
    # Quoted and explicitly tagged scalars.
    ("'1:20'", "1:20"), ("'yes'", "yes"), ('"0o17"', "0o17"), ("!!str 1:20", "1:20"),
    ("!!float 1", 1), ("!!int '0x10'", 16), ("!!bool y", True),
    ("2020-01-01", "2020-01-01"),
])
def test_a_plain_scalar_is_typed_as_go_yaml_types_it(text: str, want: Any) -> None:
    got = value(text)
    assert got == want and type(got) is type(want), (text, got)


def test_integer_and_boolean_keys_become_their_json_text() -> None:
    doc = b"data:\n  1: one\n  0x10: sixteen\n  yes: y\n  y: why\n  k: v\n"
    assert bodies.parse(doc, "application/yaml")["data"] == {
        "1": "one", "16": "sixteen", "true": "why", "k": "v"}


def test_merge_keys_still_merge() -> None:
    doc = b"base: &b {x: 1, z: 3}\nm:\n  <<: *b\n  x: 2\n"
    assert bodies.parse(doc, "application/yaml")["m"] == {"x": 2, "z": 3}


@pytest.mark.parametrize("doc", [b"a: !!int abc\n", b"a: !!bool 1\n", b"~: x\n"])
def test_what_go_yaml_refuses_is_a_400(doc: bytes) -> None:
    with pytest.raises(ApiError) as e:
        bodies.parse(doc, "application/yaml")
    assert e.value.code == 400


async def test_a_config_map_applied_as_yaml_keeps_1_20_and_friends(tmp_path: Path) -> None:
    reg = KindRegistry()
    replica = Replica(tmp_path / "data", "pi-1")
    store = ObjectStore(replica, reg)
    ns = reg.by_kind("v1", "Namespace")
    assert ns is not None
    await store.create(ns, {"metadata": {"name": "default"}})
    api = ApiServer(store, reg, Credentials({"t": "admin"}))
    client: TestClient[Any, Any] = TestClient(TestServer(api.app()))
    await client.start_server()
    try:
        body = (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: times}\n"
                b"data:\n  start: 1:20\n  mode: '0o17'\n  sep: =\n")
        r = await client.post("/api/v1/namespaces/default/configmaps", data=body,
                              headers={"Authorization": "Bearer t",
                                       "Content-Type": "application/yaml"})
        assert r.status == 201, await r.text()
        assert (await r.json())["data"] == {"start": "1:20", "mode": "0o17", "sep": "="}
    finally:
        await client.close()
        replica.close()
