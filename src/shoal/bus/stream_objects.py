"""Stream and Consumer objects (``jetstream.nats.io/v1beta2``, the shape of NATS's own
Kubernetes controller, NACK) and what JetStream is asked to hold for them.

Shoal adds what the edge needs: ``spec.placement.site`` names the site whose peers create
the stream (none: every site creates its own copy, in its own JetStream domain), and a
source or mirror may name the ``domain`` (the site) it reads from across the leaf link,
which is how a hub stream collects the streams of edge sites and catches up after a cut.
The kinds are served as CustomResourceDefinitions that the node writes when absent, with
an ``openAPIV3Schema`` (subjects must be NATS subjects, limits non-negative, enumerations
closed), so that a bad Stream is a 422 at ``kubectl apply``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

GROUP = "jetstream.nats.io"
VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
STREAMS = f"streams.{GROUP}"
CONSUMERS = f"consumers.{GROUP}"
CRD_VERSION_ANNOTATION = "bus.shoal.dev/crd-revision"
CRD_REVISION = "2"

# A NATS subject: dot-separated tokens, ``*`` a whole token, ``>`` only the last token.
SUBJECT_PATTERN = r"^(([^.*> \t\r\n]+|\*)\.)*([^.*> \t\r\n]+|\*|>)$"
# A stream or consumer name: JetStream refuses dots, wildcards, spaces and path separators.
NAME_PATTERN = r"^[^.*> \t\r\n/\\]+$"
# A Go duration as NACK takes it ("24h", "1h30m", "500ms", "2m").
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (``"1h30m"``), as the schema admits them."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def _string(pattern: str | None = None, enum: list[str] | None = None,
            description: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "string"}
    if pattern:
        s["pattern"] = pattern
    if enum:
        s["enum"] = enum
    if description:
        s["description"] = description
    return s


def _count(description: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {"type": "integer", "minimum": -1}
    if description:
        s["description"] = description
    return s


_SOURCE = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _string(NAME_PATTERN, description="the stream read from"),
        "domain": _string(r"^[A-Za-z0-9_-]+$", description=(
            "the site (JetStream domain) it lives in, across the leaf link (Shoal)")),
        "externalApiPrefix": _string(description="as in NACK: the JetStream API prefix"),
        "externalDeliverPrefix": _string(),
        "filterSubject": _string(SUBJECT_PATTERN),
        "optStartSeq": {"type": "integer", "minimum": 0},
        "optStartTime": _string(),
    },
}

STREAM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "name": _string(NAME_PATTERN, description="the JetStream stream's name "
                                "(default: the object's name)"),
                "description": _string(),
                "subjects": {"type": "array", "items": _string(SUBJECT_PATTERN)},
                "retention": _string(enum=["limits", "interest", "workqueue"]),
                "storage": _string(enum=["file", "memory"]),
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
                "maxAge": _string(DURATION_PATTERN),
                "maxBytes": _count(),
                "maxMsgs": _count(),
                "maxMsgSize": _count(),
                "maxMsgsPerSubject": _count(),
                "maxConsumers": _count(),
                "discard": _string(enum=["old", "new"]),
                "duplicateWindow": _string(DURATION_PATTERN, description=(
                    "messages with the same Nats-Msg-Id within it are stored once")),
                "noAck": {"type": "boolean"},
                "sources": {"type": "array", "items": _SOURCE},
                "mirror": _SOURCE,
                "placement": {"type": "object", "properties": {
                    "site": _string(r"^[A-Za-z0-9_-]+$", description=(
                        "the site whose peers create it (Shoal); none: every site")),
                    "cluster": _string(),
                    "tags": {"type": "array", "items": {"type": "string"}},
                }},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}

CONSUMER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["streamName"],
            "properties": {
                "streamName": _string(NAME_PATTERN),
                "durableName": _string(NAME_PATTERN, description="(default: the object's "
                                       "name)"),
                "description": _string(),
                "deliverPolicy": _string(enum=["all", "last", "new", "byStartSequence",
                                               "byStartTime", "lastPerSubject"]),
                "optStartSeq": {"type": "integer", "minimum": 0},
                "optStartTime": _string(),
                "ackPolicy": _string(enum=["none", "all", "explicit"]),
                "ackWait": _string(DURATION_PATTERN),
                "maxDeliver": _count(),
                "filterSubject": _string(SUBJECT_PATTERN),
                "maxAckPending": _count(),
                "maxWaiting": _count(),
                "replayPolicy": _string(enum=["instant", "original"]),
                "deliverSubject": _string(SUBJECT_PATTERN),
                "deliverGroup": _string(),
                "placement": {"type": "object", "properties": {
                    "site": _string(r"^[A-Za-z0-9_-]+$"),
                }},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def _crd(kind: str, plural: str, short: list[str], schema: dict[str, Any],
         columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "annotations": {CRD_VERSION_ANNOTATION: CRD_REVISION},
                     "labels": {"app.kubernetes.io/managed-by": "shoal"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short,
                      "categories": ["nats", "jetstream"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    }


def stream_crd() -> dict[str, Any]:
    return _crd("Stream", "streams", ["str"], STREAM_SCHEMA, [
        {"name": "Subjects", "type": "string", "jsonPath": ".spec.subjects"},
        {"name": "Site", "type": "string", "jsonPath": ".spec.placement.site", "priority": 1},
        {"name": "Messages", "type": "integer", "jsonPath": ".status.messages",
         "description": "messages the stream holds (at its site; summed over sites when "
                        "every site holds one)"},
        {"name": "Lag", "type": "integer", "jsonPath": ".status.lag",
         "description": "messages its sources hold that it has not yet copied"},
        {"name": "Hub Lag", "type": "integer", "jsonPath": ".status.hubLag",
         "description": "messages of this stream that the stream sourcing it at another "
                        "site (the hub's) does not hold yet, as last reported"},
        {"name": "Held", "type": "string", "jsonPath": ".status.held", "priority": 1,
         "description": "messages held per site"},
        {"name": "Ready", "type": "string",
         "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])


def consumer_crd() -> dict[str, Any]:
    return _crd("Consumer", "consumers", ["con"], CONSUMER_SCHEMA, [
        {"name": "Stream", "type": "string", "jsonPath": ".spec.streamName"},
        {"name": "Filter", "type": "string", "jsonPath": ".spec.filterSubject",
         "priority": 1},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.pending",
         "description": "messages not yet delivered"},
        {"name": "Ack Pending", "type": "integer", "jsonPath": ".status.ackPending"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])


def stream_name(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("name") or (obj.get("metadata") or {}).get("name", ""))


def consumer_name(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("durableName") or (obj.get("metadata") or {}).get("name", ""))


def placed_site(obj: Mapping[str, Any]) -> str | None:
    site = ((obj.get("spec") or {}).get("placement") or {}).get("site")
    return str(site) if site else None


def belongs_to(obj: Mapping[str, Any], site: str) -> bool:
    """Whether the peers of ``site`` create this Stream or Consumer."""
    placed = placed_site(obj)
    return placed is None or placed == site


def conflicts(spec: Mapping[str, Any]) -> list[str]:
    """What in a Stream's spec JetStream would refuse, said before it is stored."""
    out = []
    if spec.get("mirror") and spec.get("subjects"):
        out.append("spec.mirror: a mirror takes no subjects of its own")
    if spec.get("mirror") and spec.get("sources"):
        out.append("spec.mirror: a stream is either a mirror or has sources, not both")
    max_bytes, max_size = spec.get("maxBytes"), spec.get("maxMsgSize")
    if (isinstance(max_bytes, int) and isinstance(max_size, int)
            and max_bytes > 0 and max_size > max_bytes):
        out.append(f"spec.maxMsgSize: {max_size} is larger than spec.maxBytes ({max_bytes})")
    window, age = spec.get("duplicateWindow"), spec.get("maxAge")
    try:
        if (isinstance(window, str) and isinstance(age, str) and parse_duration(age) > 0
                and parse_duration(window) > parse_duration(age)):
            out.append(f"spec.duplicateWindow: {window} is longer than spec.maxAge ({age})")
    except ValueError:
        pass  # the schema reports a malformed duration
    if spec.get("retention") == "workqueue" and spec.get("discard") == "new" and \
            spec.get("maxMsgsPerSubject", -1) not in (-1, None):
        out.append("spec.discard: new with maxMsgsPerSubject is refused for work queues")
    return out


def _source_config(src: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": src["name"]}
    if src.get("filterSubject"):
        out["filter_subject"] = src["filterSubject"]
    if src.get("optStartSeq"):
        out["opt_start_seq"] = src["optStartSeq"]
    api = src.get("externalApiPrefix")
    if src.get("domain"):
        api = f"$JS.{src['domain']}.API"
    if api:
        external: dict[str, Any] = {"api": api}
        if src.get("externalDeliverPrefix"):
            external["deliver"] = src["externalDeliverPrefix"]
        out["external"] = external
    return out


NANOS = 1_000_000_000

# JetStream's own defaults for what a spec leaves out, so that a field removed from the
# object is reset in the stream rather than kept at its last value.
STREAM_DEFAULTS: dict[str, Any] = {
    "retention": "limits", "storage": "file", "max_bytes": -1, "max_msgs": -1,
    "max_msg_size": -1, "max_msgs_per_subject": -1, "max_consumers": -1, "discard": "old",
    "no_ack": False, "max_age": 0}


def stream_config(obj: Mapping[str, Any], site_peers: int) -> dict[str, Any]:
    """The JetStream stream configuration, as JetStream's API spells it (durations in
    nanoseconds), for a Stream object at a site with ``site_peers`` bus peers (replicas
    are capped there: a site of one cannot hold three copies)."""
    spec: Mapping[str, Any] = obj.get("spec") or {}
    conf: dict[str, Any] = {"name": stream_name(obj), **STREAM_DEFAULTS}
    simple = {"description": "description", "subjects": "subjects", "retention": "retention",
              "storage": "storage", "maxBytes": "max_bytes", "maxMsgs": "max_msgs",
              "maxMsgSize": "max_msg_size", "maxMsgsPerSubject": "max_msgs_per_subject",
              "maxConsumers": "max_consumers", "discard": "discard", "noAck": "no_ack"}
    for field, key in simple.items():
        if spec.get(field) is not None:
            conf[key] = spec[field]
    conf["num_replicas"] = max(1, min(int(spec.get("replicas") or 1), max(site_peers, 1)))
    if spec.get("maxAge"):
        conf["max_age"] = int(parse_duration(spec["maxAge"]) * NANOS)
    if spec.get("duplicateWindow"):
        conf["duplicate_window"] = int(parse_duration(spec["duplicateWindow"]) * NANOS)
    if spec.get("sources"):
        conf["sources"] = [_source_config(s) for s in spec["sources"]]
    if spec.get("mirror"):
        conf["mirror"] = _source_config(spec["mirror"])
    return conf


_DELIVER = {"all": "all", "last": "last", "new": "new", "byStartSequence": "by_start_sequence",
            "byStartTime": "by_start_time", "lastPerSubject": "last_per_subject"}


def consumer_config(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The JetStream consumer configuration (JetStream's names, nanoseconds)."""
    spec: Mapping[str, Any] = obj.get("spec") or {}
    name = consumer_name(obj)
    conf: dict[str, Any] = {"durable_name": name,
                            "deliver_policy": _DELIVER[spec.get("deliverPolicy") or "all"],
                            "ack_policy": spec.get("ackPolicy") or "explicit"}
    simple = {"description": "description", "optStartSeq": "opt_start_seq",
              "maxDeliver": "max_deliver", "filterSubject": "filter_subject",
              "maxAckPending": "max_ack_pending", "maxWaiting": "max_waiting",
              "replayPolicy": "replay_policy", "deliverSubject": "deliver_subject",
              "deliverGroup": "deliver_group"}
    for field, key in simple.items():
        if spec.get(field) is not None:
            conf[key] = spec[field]
    if spec.get("ackWait"):
        conf["ack_wait"] = int(parse_duration(spec["ackWait"]) * NANOS)
    return conf
