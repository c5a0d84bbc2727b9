"""Reading request bodies: size limits, JSON, YAML and protobuf, and the apiVersion/kind checks."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import yaml

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


class _JsonYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as Kubernetes reads it: converted to JSON, so timestamps stay strings. libyaml's
    parser when PyYAML has it: a 3 MiB body holds the event loop 4x less (13.4 s -> 3.4 s
    of CPU for 300,000 keys), and it bounds nesting itself."""


_JsonYamlLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


CONVERTED_BODY = web.RequestKey("shoal_converted_body", bytes)
"""A body already read and converted to the storage version (``served_versions``)."""


async def read_raw(request: web.Request) -> bytes:
    if CONVERTED_BODY in request:
        return request[CONVERTED_BODY]
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"request entity too large: limit is {MAX_BODY}")
    deadline = request.config_dict.get(BODY_DEADLINE)
    if not deadline:
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


def parse(raw: bytes, content_type: str) -> Any:
    """Decode a JSON, YAML or Kubernetes protobuf body; a malformed one is a 400."""
    if not raw.strip():
        raise ApiError(400, "the body of the request was empty")
    if content_type == protobuf.PROTOBUF:
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as e:
            raise ApiError(e.code, e.message) from e
    if "yaml" in content_type:
        try:
            value = yaml.load(raw, Loader=_JsonYamlLoader)  # a SafeLoader
        except yaml.YAMLError as e:
            raise ApiError(400, f"error converting YAML to JSON: {e}") from e
        except RecursionError as e:
            raise ApiError(400, "error converting YAML to JSON: the document is nested too "
                           "deeply") from e
        except ValueError as e:  # an integer of more than 4,300 digits (Python's limit)
            raise ApiError(400, f"error converting YAML to JSON: {e}") from e
        # Aliases may repeat a node without repeating its bytes (a "billion laughs" body
        # of 1 KB walks to 10^9 nodes and holds the loop for good): a document may expand
        # to little more than its own size, as go-yaml's alias budget allows.
        check_json_value(value, "error converting YAML to JSON",
                         max_nodes=len(raw) + YAML_ALIAS_ALLOWANCE)
        return value
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"couldn't get version/kind; json parse error: {e}") from e
    check_json_value(value, "couldn't get version/kind; json parse error")
    return value


def _not_utf8(s: str) -> bool:
    """A string with a lone surrogate (YAML's "\\ud800"): no UTF-8, so no JSON form."""
    if s.isascii():
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return True
    return False


def check_json_value(value: Any, prefix: str, max_nodes: int | None = None) -> None:
    """A 400 for what JSON cannot hold (YAML's binary, sets, non-string keys, infinities,
    integers past 64 bits, lone surrogates), for nesting deeper than ``MAX_DEPTH`` and for
    more than ``max_nodes`` values (YAML aliases expanding); walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    budget = max_nodes
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


async def read_object(request: web.Request) -> dict[str, Any]:
    if CONVERTED_BODY in request:
        return dict(orjson.loads(request[CONVERTED_BODY]))
    check_media_type(request.content_type)
    body = parse(await read_raw(request), request.content_type or "application/json")
    if not isinstance(body, dict):
        raise ApiError(400, "the body of the request must be a JSON object")
    return body


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
