"""How a write's body is decoded, as kube-apiserver does it (``fieldValidation``: Ignore,
Warn when the client sends none, Strict): unknown fields are dropped from what is stored
(built-in kinds, custom resources pruned to their schema) and warned of or refused,
repeated JSON and YAML keys are warned of or refused, server-side apply refuses unknown
fields whatever the mode, and integer query parameters are Go's int64 (a 400 otherwise).
In process, one server for the module; the kubectl half starts a real server."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api import bodies, pod_streams
from shoal.api.errors import ApiError
from shoal.control.crd_establishing import serve_crds
from tests.conftest import ShoalProcess
from tests.inprocess_api import AUTH, InProcessApi, in_process_api

ASYNC = pytest.mark.asyncio(loop_scope="module")
NS = "/api/v1/namespaces/default"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
MERGE = {**AUTH, "Content-Type": "application/merge-patch+json"}
STRATEGIC = {**AUTH, "Content-Type": "application/strategic-merge-patch+json"}
JSON_PATCH = {**AUTH, "Content-Type": "application/json-patch+json"}
APPLY = {**AUTH, "Content-Type": "application/apply-patch+yaml"}
RAW_JSON = {**AUTH, "Content-Type": "application/json"}
RAW_YAML = {**AUTH, "Content-Type": "application/yaml"}

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "properties": {
                         "size": {"type": "integer"},
                         "extra": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}}}}}]},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessApi]:
    async with in_process_api(Path(tmp_path_factory.mktemp("field-validation"))) as a:
        serve_crds(a.store)
        r = await a.client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                json=CRD, headers=AUTH)
        assert r.status == 201, await r.text()
        yield a


def _cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"a": "b"}, **extra}


def _warnings(r: Any) -> list[str]:
    # aiohttp gives the header as sent: 299 - "<text with \" escaped>"
    return [json.loads(h.split(" ", 2)[2]) for h in r.headers.getall("Warning", [])]


async def _stored(api: InProcessApi, path: str) -> dict[str, Any]:
    r = await api.client.get(path, headers=AUTH)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


def _fields_v1(obj: dict[str, Any]) -> str:
    return json.dumps([m["fieldsV1"] for m in obj["metadata"].get("managedFields", [])])


# -- unknown fields ------------------------------------------------------------------------


@ASYNC
@pytest.mark.parametrize(("query", "warned"), [("", True), ("?fieldValidation=Warn", True),
                                               ("?fieldValidation=Ignore", False)])
async def test_an_unknown_field_is_dropped_from_what_is_stored(
        api: InProcessApi, query: str, warned: bool) -> None:
    name = f"unknown-{len(query)}"
    r = await api.client.post(f"{NS}/configmaps{query}", headers=AUTH,
                              json=_cm(name, foo=1, metadata={"name": name, "bar": 2}))
    assert r.status == 201, await r.text()
    assert _warnings(r) == (['unknown field "metadata.bar"', 'unknown field "foo"']
                            if warned else [])
    for obj in (await r.json(), await _stored(api, f"{NS}/configmaps/{name}")):
        assert "foo" not in obj and "bar" not in obj["metadata"], obj
        assert obj["data"] == {"a": "b"}
        assert "f:foo" not in _fields_v1(obj)  # nor owned by the writer


@ASYNC
async def test_strict_refuses_an_unknown_field_in_the_apiservers_words(
        api: InProcessApi) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "strict"},
           "spec": {"containers": [{"name": "c", "image": "x", "imagePolicy": "Always"}],
                    "nodeSelectr": {}}}
    r = await api.client.post(f"{NS}/pods?fieldValidation=Strict", json=pod, headers=AUTH)
    body = await r.json()
    assert r.status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagePolicy", unknown field "spec.nodeSelectr"')
    assert (await api.client.get(f"{NS}/pods/strict", headers=AUTH)).status == 404


@ASYNC
async def test_an_unsupported_field_validation_is_a_422(api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps?fieldValidation=strict", json=_cm("x"),
                              headers=AUTH)
    body = await r.json()
    assert r.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
        '"strict": supported values: "", "Ignore", "Strict", "Warn"')


@ASYNC
async def test_an_update_drops_and_warns_of_unknown_fields(api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps", json=_cm("put"), headers=AUTH)
    assert r.status == 201
    cm = await r.json()
    cm["spare"] = {"x": 1}
    r = await api.client.put(f"{NS}/configmaps/put", json=cm, headers=AUTH)
    assert r.status == 200 and _warnings(r) == ['unknown field "spare"']
    assert "spare" not in await _stored(api, f"{NS}/configmaps/put")
    r = await api.client.put(f"{NS}/configmaps/put?fieldValidation=Strict", json=cm,
                             headers=AUTH)
    assert r.status == 400
    assert (await r.json())["message"] == ('ConfigMap in version "v1" cannot be handled as a '
                                           'ConfigMap: strict decoding error: unknown field '
                                           '"spare"')


@ASYNC
@pytest.mark.parametrize(("headers", "patch"), [
    (MERGE, b'{"foo": 1, "data": {"x": "y"}}'),
    (STRATEGIC, b'{"foo": 1, "data": {"x": "y"}}'),
    (JSON_PATCH, b'[{"op": "add", "path": "/foo", "value": 1},'
                 b' {"op": "add", "path": "/data/x", "value": "y"}]'),
])
async def test_a_patch_drops_and_warns_of_the_unknown_fields_it_adds(
        api: InProcessApi, headers: dict[str, str], patch: bytes) -> None:
    name = f"patched-{headers['Content-Type'].split('/')[1][:4]}"
    r = await api.client.post(f"{NS}/configmaps", json=_cm(name), headers=AUTH)
    assert r.status == 201
    for _ in range(2):  # the second time too: the first left nothing behind to warn of
        r = await api.client.patch(f"{NS}/configmaps/{name}", data=patch, headers=headers)
        assert r.status == 200, await r.text()
        assert _warnings(r) == ['unknown field "foo"']
        stored = await _stored(api, f"{NS}/configmaps/{name}")
        assert "foo" not in stored and stored["data"] == {"a": "b", "x": "y"}
    r = await api.client.patch(f"{NS}/configmaps/{name}?fieldValidation=Strict", data=patch,
                               headers=headers)
    assert r.status == 400
    # A patch is refused without "cannot be handled" (the apiserver's patch handler).
    assert (await r.json())["message"] == 'strict decoding error: unknown field "foo"'
    r = await api.client.patch(f"{NS}/configmaps/{name}?fieldValidation=Ignore", data=patch,
                               headers=headers)
    assert r.status == 200 and _warnings(r) == []


@ASYNC
@pytest.mark.parametrize("mode", ["Ignore", "Warn", "Strict"])
async def test_server_side_apply_refuses_an_unknown_field_in_every_mode(
        api: InProcessApi, mode: str) -> None:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\nzap: 1\ndata:\n  a: b\n"
    r = await api.client.patch(f"{NS}/configmaps/ssa?fieldManager=m&fieldValidation={mode}",
                               data=doc, headers=APPLY)
    body = await r.json()
    assert r.status == 400, body
    assert body["message"] == ("failed to create typed patch object (default/ssa; /v1, "
                               "Kind=ConfigMap): .zap: field not declared in schema")


@ASYNC
async def test_a_custom_resource_is_pruned_to_its_schema(api: InProcessApi) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
              "spec": {"size": 1, "colour": "red", "extra": {"kept": True}}}
    r = await api.client.post(WIDGETS, json=widget, headers=AUTH)
    assert r.status == 201, await r.text()
    assert _warnings(r) == ['unknown field "spec.colour"']
    assert (await _stored(api, f"{WIDGETS}/w"))["spec"] == {"size": 1,
                                                           "extra": {"kept": True}}
    r = await api.client.post(f"{WIDGETS}?fieldValidation=Strict",
                              json={**widget, "metadata": {"name": "w2"}}, headers=AUTH)
    assert r.status == 400
    assert (await r.json())["message"] == (
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: '
        'unknown field "spec.colour"')
    r = await api.client.patch(f"{WIDGETS}/w", data=b'{"spec": {"shape": "round"}}',
                               headers=MERGE)
    assert r.status == 200 and _warnings(r) == ['unknown field "spec.shape"']
    assert "shape" not in (await _stored(api, f"{WIDGETS}/w"))["spec"]


# -- repeated keys -------------------------------------------------------------------------


@ASYNC
async def test_a_repeated_json_key_is_warned_of_and_the_last_value_kept(
        api: InProcessApi) -> None:
    raw = (b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"dup","name":"dup"},'
           b'"spec":{"containers":[{"name":"c","image":"a","image":"b"}]}}')
    r = await api.client.post(f"{NS}/pods", data=raw, headers=RAW_JSON)
    assert r.status == 201, await r.text()
    assert _warnings(r) == ['duplicate field "metadata.name"',
                            'duplicate field "spec.containers[0].image"']
    assert (await r.json())["spec"]["containers"][0]["image"] == "b"
    r = await api.client.post(f"{NS}/pods?fieldValidation=Strict",
                              data=raw.replace(b'"dup"', b'"dup2"'), headers=RAW_JSON)
    assert r.status == 400
    assert (await r.json())["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: duplicate '
        'field "metadata.name", duplicate field "spec.containers[0].image"')
    r = await api.client.post(f"{NS}/pods?fieldValidation=Ignore",
                              data=raw.replace(b'"dup"', b'"dup3"'), headers=RAW_JSON)
    assert r.status == 201 and _warnings(r) == []


@ASYNC
async def test_a_repeated_yaml_key_is_warned_of_or_refused(api: InProcessApi) -> None:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yml\ndata:\n  a: x\n  a: z\n"
    r = await api.client.post(f"{NS}/configmaps?fieldValidation=Strict", data=doc,
                              headers=RAW_YAML)
    assert r.status == 400
    assert (await r.json())["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'yaml: unmarshal errors:\n  line 7: key "a" already set in map')
    r = await api.client.post(f"{NS}/configmaps", data=doc, headers=RAW_YAML)
    assert r.status == 201
    assert _warnings(r) == ['yaml: unmarshal errors:   line 7: key "a" already set in map']
    assert (await r.json())["data"] == {"a": "z"}


@ASYNC
async def test_a_repeated_key_in_a_patch_or_an_apply(api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps", json=_cm("rp"), headers=AUTH)
    assert r.status == 201
    r = await api.client.patch(f"{NS}/configmaps/rp", headers=MERGE,
                               data=b'{"data":{"x":"1","x":"2"}}')
    assert r.status == 200 and _warnings(r) == ['duplicate field "data.x"']
    r = await api.client.patch(f"{NS}/configmaps/rp?fieldValidation=Strict", headers=JSON_PATCH,
                               data=b'[{"op":"add","op":"add","path":"/data/y","value":"1"}]')
    assert r.status == 400
    assert (await r.json())["message"] == 'strict decoding error: json patch duplicate field ' \
                                          '"[0].op"'
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ap\ndata:\n  a: b\n  a: c\n"
    r = await api.client.patch(f"{NS}/configmaps/ap?fieldManager=m&fieldValidation=Strict",
                               data=doc, headers=APPLY)
    assert r.status == 400
    assert (await r.json())["message"] == (
        "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n"
        '  line 7: key "a" already set in map')
    r = await api.client.patch(f"{NS}/configmaps/ap?fieldManager=m", data=doc, headers=APPLY)
    assert r.status == 201, await r.text()
    assert _warnings(r) == ["error converting YAML to JSON: yaml: unmarshal errors:   "
                            'line 7: key "a" already set in map']


@pytest.mark.parametrize(("text", "repeats"), [
    (b'{"a":1,"b":{"a":2}}', []),
    (b'{"a":1,"a":2}', ['duplicate field "a"']),
    (b'{"a" : 1, "b" :2}', []),                      # spaces before the colons
    (b'{"a" : 1, "a" :2}', ['duplicate field "a"']),
    (b'{"a":"x\\":","b":1}', []),                      # '":' inside a string
    (b'{"a":"x\\":","a":1}', ['duplicate field "a"']),
    (b'{"a\\\\":1,"a\\\\":2}', ['duplicate field "a\\\\"']),  # a key ending in a backslash
    (b'{"a":" :","b":1}', []),                         # '" :' opening a string
    (b'[{"k":1},{"k":1,"k":2}]', ['duplicate field "[1].k"']),
    (b'{"l":[[{"x":{"y":1,"y":1}}]]}', ['duplicate field "l[0][0].x.y"']),
])
def test_repeated_json_keys_are_found_however_the_text_is_written(
        text: bytes, repeats: list[str]) -> None:
    found: list[str] = []
    bodies.parse(text, "application/json", found)
    assert found == repeats
    if not repeats and b" " not in text:
        assert not bodies.may_repeat_keys(text, bodies.check_json_value(json.loads(text), ""))


_KEYS = st.text(alphabet='ab"\\: \n{', max_size=3)
_TREES = st.recursive(
    st.one_of(st.integers(-5, 5), st.text(alphabet='x"\\: ,', max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.lists(st.tuples(_KEYS, inner), max_size=4)),
    max_leaves=12)


def _write(tree: Any, colon: str) -> str:
    """JSON text for a tree whose objects are lists of (key, value) pairs, repeats kept."""
    if isinstance(tree, list) and all(isinstance(p, tuple) for p in tree) and tree:
        return "{" + ",".join(json.dumps(k) + colon + _write(v, colon) for k, v in tree) + "}"
    if isinstance(tree, list):
        return "[" + ",".join(_write(v, colon) for v in tree) + "]"
    return json.dumps(tree)


def _repeats(tree: Any) -> int:
    if isinstance(tree, list) and all(isinstance(p, tuple) for p in tree) and tree:
        keys = [k for k, _ in tree]
        return len(keys) - len(set(keys)) + sum(_repeats(v) for _, v in tree)
    return sum(_repeats(v) for v in tree) if isinstance(tree, list) else 0


@settings(max_examples=300, deadline=None)
@given(_TREES, st.sampled_from([":", " : ", ":\n"]))
def test_the_cheap_check_never_misses_a_repeated_key(tree: Any, colon: str) -> None:
    text = _write(tree, colon).encode()
    keys = bodies.check_json_value(json.loads(text), "")
    repeats = _repeats(tree)
    if repeats:
        assert bodies.may_repeat_keys(text, keys)
    assert len(bodies.json_duplicates(text)) == repeats


def test_yaml_keys_that_override_a_merge_are_not_repeats() -> None:
    found: list[str] = []
    doc = b"base: &b {x: 1}\nm:\n  <<: *b\n  x: 2\n"
    assert bodies.parse(doc, "application/yaml", found)["m"] == {"x": 2}
    assert found == []


# -- integer query parameters --------------------------------------------------------------


@ASYNC
@pytest.mark.parametrize(("query", "message"), [
    ("timeoutSeconds=99999999999999999999999",
     'strconv.ParseInt: parsing "99999999999999999999999": value out of range'),
    ("timeoutSeconds=1.5", 'strconv.ParseInt: parsing "1.5": invalid syntax'),
    ("limit=9223372036854775808",
     'strconv.ParseInt: parsing "9223372036854775808": value out of range'),
    ("limit=1_0", 'strconv.ParseInt: parsing "1_0": invalid syntax'),
    ("resourceVersion=-1",
     'resourceVersion: Invalid value: "-1": strconv.ParseUint: parsing "-1": invalid syntax'),
    ("resourceVersion=18446744073709551616",
     'resourceVersion: Invalid value: "18446744073709551616": strconv.ParseUint: parsing '
     '"18446744073709551616": value out of range'),
])
@pytest.mark.parametrize("watch", [False, True])
async def test_an_integer_parameter_out_of_go_range_is_a_400(
        api: InProcessApi, query: str, message: str, watch: bool) -> None:
    path = f"{NS}/configmaps?{'watch=true&' if watch else ''}{query}"
    r = await asyncio.wait_for(api.client.get(path, headers=AUTH), 10)
    body = await r.json()
    assert r.status == 400 and body["reason"] == "BadRequest", body
    assert body["message"] == message


@ASYNC
async def test_a_delete_with_a_grace_period_out_of_range_is_a_400(api: InProcessApi) -> None:
    r = await api.client.post(f"{NS}/configmaps", json=_cm("graceful"), headers=AUTH)
    assert r.status == 201
    r = await api.client.delete(
        f"{NS}/configmaps/graceful?gracePeriodSeconds=99999999999999999999999", headers=AUTH)
    assert r.status == 400
    r = await api.client.delete(f"{NS}/configmaps/graceful", headers=AUTH,
                                json={"gracePeriodSeconds": 2**63})
    assert r.status == 400
    await _stored(api, f"{NS}/configmaps/graceful")  # still there
    r = await api.client.delete(f"{NS}/configmaps/graceful?gracePeriodSeconds=0", headers=AUTH)
    assert r.status == 200


@pytest.mark.parametrize(("query", "want"), [
    ("tailLines=99999999999999999999999", None), ("limitBytes=1e3", None),
    ("sinceSeconds=9223372036854775807", 9223372036854775807), ("tailLines=-5", -5)])
def test_the_log_parameters_are_int64s(query: str, want: int | None) -> None:
    key = query.split("=")[0]
    request = make_mocked_request("GET", f"/api/v1/namespaces/d/pods/p/log?{query}")
    if want is None:
        with pytest.raises(ApiError) as e:
            pod_streams._int(request, key)
        assert e.value.code == 400 and e.value.message.startswith("strconv.ParseInt: ")
    else:
        assert pod_streams._int(request, key) == want


# -- kubectl -------------------------------------------------------------------------------


CM_YAML = textwrap.dedent("""\
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: {name}
    data:
      a: b
    colour: red
""")


@pytest.mark.slow
def test_kubectl_sees_unknown_fields_as_against_kubernetes(shoal: ShoalProcess) -> None:
    refused = shoal.kubectl("create", "-f", "-", check=False, input=CM_YAML.format(name="c1"))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": ConfigMap in version '
        '"v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "colour"')
    strict = shoal.kubectl("apply", "--validate=strict", "-f", "-", check=False,
                           input=CM_YAML.format(name="c2"))
    assert strict.returncode == 1 and 'unknown field "colour"' in strict.stderr
    warned = shoal.kubectl("apply", "--validate=warn", "-f", "-",
                           input=CM_YAML.format(name="c3"))
    assert 'Warning: unknown field "colour"' in warned.stderr
    assert "configmap/c3 created" in warned.stdout
    stored = json.loads(shoal.kubectl("get", "configmap", "c3", "-o", "json").stdout)
    assert "colour" not in stored and stored["data"] == {"a": "b"}
    ssa = shoal.kubectl("apply", "--server-side", "-f", "-", check=False,
                        input=CM_YAML.format(name="c4"))
    assert ssa.returncode == 1
    assert "failed to create typed patch object (default/c4; /v1, Kind=ConfigMap): " \
           ".colour: field not declared in schema" in ssa.stderr
