"""Reading request bodies: size limits, JSON, YAML and protobuf, and the apiVersion/kind checks."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import orjson

from shoal.api import protobuf, web
from shoal.api.errors import ApiError
from shoal.model.kinds import Kind
from shoal.store.objects import MAX_OBJECT_DEPTH

MAX_BODY = 3 * 1024 * 1024  # the apiserver's limit for a request body
MAX_DEPTH = MAX_OBJECT_DEPTH  # a body deeper than an object may be is refused on arrival
YAML_ALIAS_ALLOWANCE = 100_000
"""Values a YAML body may hold beyond one per byte of it, through aliases."""
BODY_DEADLINE = web.AppKey("body_deadline", float)
"""Seconds a request body may take to arrive (the API's idle timeout; a slow client's
body is refused with 408 rather than holding a handler forever)."""


def go_quote(key: Any) -> str:
    """A key as Go's ``%#v`` prints it (a string quoted, a number bare)."""
    return orjson.dumps(key).decode() if isinstance(key, str) else str(key)


CONVERTED_BODY = web.RequestKey("shoal_converted_body", bytes)
"""A body already read and converted to the storage version (``served_versions``)."""


async def read_raw(request: web.Request) -> bytes:
    if CONVERTED_BODY in request:
        return request[CONVERTED_BODY]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"request entity too large: limit is {MAX_BODY}")
    deadline = request.config_dict.get(BODY_DEADLINE)
    if not deadline or request.content.is_eof():
        # (a body that has all arrived, as most small ones have by now, waits for nothing:
        # no timer to arm and cancel; issue 11)
        return await _read_raw(request)
    try:
        async with asyncio.timeout(deadline):
            return await _read_raw(request)
    except TimeoutError:
        # The server then closes the connection (the body was not read whole).
        raise ApiError(408, f"the request body did not arrive within {deadline:g}s") from None


async def _read_raw(request: web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"request entity too large: limit is {MAX_BODY}")
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes, content_type: str, duplicates: list[str] | None = None) -> Any:
    """Decode a JSON, YAML or Kubernetes protobuf body; a malformed one is a 400.

    A key repeated in an object keeps its last value. Given ``duplicates``, the strict
    decoding errors the apiserver finds for them are added to it: ``duplicate field
    "spec.replicas"`` for JSON (sigs.k8s.io/json's words), one ``yaml: unmarshal errors:``
    with a line per repeat for YAML (go-yaml's).
    """
    if not raw.strip():
        raise ApiError(400, "the body of the request was empty")
    if content_type == protobuf.PROTOBUF:
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as e:
            raise ApiError(e.code, e.message) from e
    if "yaml" in content_type:
        # Imported on the first YAML body: PyYAML is 2.6 MB of a node's memory, and
        # clients send JSON (kubectl, client-go, Helm) or protobuf (issue 11's footprint).
        from shoal.api.yaml_bodies import load_yaml

        value, repeated = load_yaml(raw)
        # Aliases may repeat a node without repeating its bytes (a "billion laughs" body
        # of 1 KB walks to 10^9 nodes and holds the loop for good): a document may expand
        # to little more than its own size, as go-yaml's alias budget allows.
        check_json_value(value, "error converting YAML to JSON",
                         max_nodes=len(raw) + YAML_ALIAS_ALLOWANCE)
        if duplicates is not None and repeated:
            duplicates.append("yaml: unmarshal errors:\n  " + "\n  ".join(repeated))
        return value
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"couldn't get version/kind; json parse error: {e}") from e
    keys = _check_orjson_value(value, "couldn't get version/kind; json parse error")
    if duplicates is not None and may_repeat_keys(raw, keys):
        duplicates.extend(json_duplicates(raw))
    return value


# -- repeated keys in JSON ---------------------------------------------------------------
#
# orjson keeps the last of a repeated key and says nothing. Parsing every body a second
# time to find repeats would double a create's decoding, so the text is first checked
# against the decoded value: once the escapes \\ and \" are removed, a '"' byte only ever
# opens or closes a string, and '":' only ever ends a key (a value is never followed by
# a colon), so the text holds at least as many keys as it has '":'. When that count
# equals the keys decoded and no key is followed by a space before its colon, no key was
# repeated. Otherwise (a repeat, or a body written with spaces before colons), the text is
# parsed again to name the repeats. Client-go, kubectl and the Python client write no
# such spaces.

_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]+:')


def may_repeat_keys(raw: bytes, keys: int) -> bool:
    """Whether the JSON text ``raw``, decoded to ``keys`` object keys in all, may have
    held a key twice in one object (False: it certainly did not)."""
    if b"\\" in raw:
        # Only the escapes \\ and \" hold a backslash or a quote; taken from the left,
        # the first backslash of a pair always starts an escape.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    written = raw.count(b'":')
    return written != keys or _SPACED_KEY_END.search(raw) is not None


class _Keyed(dict[str, Any]):
    """An object of the JSON text, with the keys it repeated and the values they hid."""

    repeated: list[tuple[str, Any]]


def _keyed(pairs: list[tuple[str, Any]]) -> _Keyed:
    out = _Keyed()
    out.repeated = []
    for key, value in pairs:
        if key in out:
            out.repeated.append((key, out[key]))
        out[key] = value
    return out


def json_duplicates(raw: bytes) -> list[str]:
    """``duplicate field "<path>"`` for each key an object of the JSON text repeats, the
    path as sigs.k8s.io/json writes it (``spec.template.spec.containers[0].image``)."""
    out: list[str] = []
    try:
        value = json.loads(raw, object_pairs_hook=_keyed)
    except (ValueError, RecursionError):  # orjson took it: no second opinion then
        return out
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Keyed):
            out.extend(f"duplicate field {go_quote(_join(path, k))}" for k, _ in value.repeated)
            stack.extend((v, _join(path, k)) for k, v in reversed(value.items()))
            # (a value a repeat replaced was decoded too, and its own repeats reported)
            stack.extend((v, _join(path, k)) for k, v in reversed(value.repeated))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _not_utf8(s: str) -> bool:
    """A string with a lone surrogate (YAML's "\\ud800"): no UTF-8, so no JSON form."""
    if s.isascii():
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return True
    return False


def _check_orjson_value(value: Any, prefix: str) -> int:
    """:func:`check_json_value` for what ``orjson.loads`` returned, which refuses what JSON
    cannot hold itself (lone surrogates, infinities; an integer past 64 bits becomes a
    float): only the depth is checked, and only containers are walked (issue 11: every
    create's body). Returns the number of keys of all the objects in ``value``."""
    if type(value) is not dict and type(value) is not list:
        return 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    keys = 0
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"{prefix}: the object is nested more than {MAX_DEPTH} "
                           "levels deep")
        depth += 1
        if type(v) is dict:
            keys += len(v)
            v = v.values()
        for child in v:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth))
    return keys


def check_json_value(value: Any, prefix: str, max_nodes: int | None = None) -> int:
    """A 400 for what JSON cannot hold (YAML's binary, sets, non-string keys, infinities,
    integers past 64 bits, lone surrogates), for nesting deeper than ``MAX_DEPTH`` and for
    more than ``max_nodes`` values (YAML aliases expanding); walked without recursion.
    Returns the number of keys of all the objects in ``value``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    budget = max_nodes
    keys = 0
    while stack:
        v, depth = stack.pop()
        if budget is not None:
            budget -= 1
            if budget < 0:
                raise ApiError(400, f"{prefix}: yaml: document contains excessive aliasing")
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise ApiError(400, f"{prefix}: the object is nested more than {MAX_DEPTH} "
                               "levels deep")
            keys += len(v)
            for k, child in v.items():
                if not isinstance(k, str):
                    raise ApiError(400, f"{prefix}: a map key is not a string: {k!r:.40}")
                if _not_utf8(k):
                    raise ApiError(400, f"{prefix}: a map key is not valid UTF-8")
                stack.append((child, depth + 1))
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise ApiError(400, f"{prefix}: the object is nested more than {MAX_DEPTH} "
                               "levels deep")
            stack.extend((child, depth + 1) for child in v)
        elif isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise ApiError(400, f"{prefix}: {v} is not a JSON number")
        elif isinstance(v, str):
            if _not_utf8(v):
                raise ApiError(400, f"{prefix}: a string is not valid UTF-8")
        elif isinstance(v, int) and not isinstance(v, bool):
            if not -(2**63) <= v < 2**64:
                raise ApiError(400, f"{prefix}: the number {str(v)[:24]}... is out of range")
        elif v is not None and not isinstance(v, bool):
            raise ApiError(400, f"{prefix}: a value of type {type(v).__name__} has no JSON form")
    return keys


SUPPORTED = ("application/json", "application/yaml", "application/x-yaml", "text/yaml",
             "application/octet-stream", "text/plain")


def check_media_type(content_type: str) -> None:
    """Bodies are JSON, YAML or protobuf; CBOR gets 415, and client-go falls back to JSON."""
    if content_type and content_type not in SUPPORTED and content_type != protobuf.PROTOBUF:
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml",
        )


async def read_object(request: web.Request,
                      duplicates: list[str] | None = None) -> dict[str, Any]:
    """The body, an object; its repeated keys into ``duplicates`` (see :func:`parse`)."""
    if CONVERTED_BODY in request:
        return dict(orjson.loads(request[CONVERTED_BODY]))
    check_media_type(request.content_type)
    body = parse(await read_raw(request), request.content_type or "application/json",
                 duplicates)
    if not isinstance(body, dict):
        raise ApiError(400, "the body of the request must be a JSON object")
    return body


def parsed_unshared(request: web.Request) -> bool:
    """Whether :func:`read_object` gave a tree that shares no dict or list within itself:
    orjson's (JSON, or a converted body), not YAML's (an alias repeats one node) or
    protobuf's. The caller may then change it in place without copying it first."""
    if CONVERTED_BODY in request:
        return True
    ctype = request.content_type or "application/json"
    return ctype != protobuf.PROTOBUF and "yaml" not in ctype


def check_type(kind: Kind, obj: dict[str, Any]) -> None:
    """The body's apiVersion and kind must be the ones the URL names (when given)."""
    av = obj.get("apiVersion")
    k = obj.get("kind")
    if (av is not None and not isinstance(av, str)) or (k is not None and not isinstance(k, str)):
        raise ApiError(400, "apiVersion and kind must be strings")
    if av and av != kind.api_version:
        raise ApiError(
            400,
            f"the API version in the data ({av}) does not match the expected API version "
            f"({kind.api_version})",
        )
    if k and k != kind.kind:
        raise ApiError(
            400, f"the kind in the data ({k}) does not match the expected kind ({kind.kind})"
        )
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ApiError(400, "metadata must be an object")
