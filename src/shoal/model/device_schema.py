"""The schemas of ``DeviceModel`` and ``Device`` (``devices.shoal.dev/v1beta1``).

They follow KubeEdge's ``devices.kubeedge.io/v1beta1`` field for field (values,
minimum and maximum are strings there too), so its objects move over with a rename of
the group. Like the Scope kind's, these schemas are hand-written: the API documents them
and validation checks types and unknown fields against them before the rules of
:mod:`shoal.model.validation.devices`.
"""

from __future__ import annotations

from typing import Any

GROUP = "devices.shoal.dev"
VERSION = "v1beta1"

PROPERTY_TYPES = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM")
ACCESS_MODES = ("ReadWrite", "ReadOnly")
MODBUS_REGISTERS = ("CoilRegister", "DiscreteInputRegister", "HoldingRegister",
                    "InputRegister")

_FREE: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _s(doc: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": doc, **extra}


def _i(doc: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "description": doc}


_METADATA_MAP: dict[str, Any] = {
    "type": "object", "additionalProperties": {"type": "string"},
    "description": "Additional data: timestamp (milliseconds since the epoch), type."}

_TWIN_VALUE: dict[str, Any] = {
    "type": "object",
    "description": "A value of the property and its metadata.",
    "properties": {"value": _s("The value, as a string."), "metadata": _METADATA_MAP},
}

_PROTOCOL: dict[str, Any] = {
    "type": "object",
    "description": "How the mapper reaches the device.",
    "properties": {
        "protocolName": _s("The mapper's protocol: modbus or mqtt on Shoal's built-in "
                           "mappers."),
        "configData": {**_FREE, "description": "The protocol's settings (modbus: ip, port, "
                       "slaveID; mqtt: nothing, the site's bus is the broker)."},
    },
}

_VISITORS: dict[str, Any] = {
    "type": "object",
    "description": "Where the property is read and written on the device.",
    "properties": {
        "protocolName": _s("The protocol these settings are for."),
        "configData": {**_FREE, "description": "modbus: register (one of "
                       + ", ".join(MODBUS_REGISTERS) + "), offset, limit, scale; mqtt: "
                       "topic (the MQTT topic the device publishes the property on)."},
    },
}

_DEVICE_PROPERTY: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _s("The property's name in the model."),
        "desired": {**_TWIN_VALUE,
                    "description": "The value the user wants; the mapper writes it to the "
                    "device."},
        "visitors": _VISITORS,
        "reportToCloud": {"type": "boolean", "description": "Kept for KubeEdge's shape; "
                          "Shoal's twin is in every replica."},
        "collectCycle": _i("Milliseconds between readings (default 1000)."),
        "reportCycle": _i("Milliseconds between writes of the reading into the twin "
                          "(default 10000)."),
        "pushMethod": {**_FREE, "description": "Where else readings go (Shoal publishes "
                       "every reading on the site's bus under devices.<namespace>.<device>."
                       "<property>)."},
    },
}

DEVICE_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "DeviceModel describes the properties a kind of device has.",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "protocol": _s("The protocol devices of this model speak."),
                "properties": {
                    "type": "array",
                    "description": "The model's properties.",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": _s("The property's name."),
                            "description": _s("What it is."),
                            "type": _s("Its type.", enum=list(PROPERTY_TYPES)),
                            "accessMode": _s("Whether the user may set it.",
                                             enum=list(ACCESS_MODES)),
                            "minimum": _s("The least value (a number, as a string)."),
                            "maximum": _s("The greatest value (a number, as a string)."),
                            "unit": _s("Its unit."),
                        },
                    },
                },
            },
        },
    },
}

DEVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Device is a sensor or actuator: its model, the node whose mapper speaks "
    "to it, and per property the desired value (spec) and the reported one (status.twins).",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["deviceModelRef"],
            "properties": {
                "deviceModelRef": {"type": "object", "required": ["name"], "properties": {
                    "name": _s("The DeviceModel, in the Device's namespace.")}},
                "nodeName": _s("The node whose mapper reads and drives the device."),
                "protocol": _PROTOCOL,
                "properties": {"type": "array", "items": _DEVICE_PROPERTY,
                               "description": "Per property: desired value and cycles."},
                "methods": {"type": "array", "items": _FREE},
            },
        },
        "status": {
            "type": "object",
            "description": "Written by the mapper on the device's node.",
            "properties": {
                "twins": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "propertyName": _s("The property."),
                        "reported": {**_TWIN_VALUE, "description": "The last value read "
                                     "from the device, at the last reportCycle."},
                        "observedDesired": {**_TWIN_VALUE, "description": "The desired "
                                            "value last written to the device."},
                    },
                }},
                "state": _s("online, offline or unknown."),
                "lastOnlineTime": _s("When the mapper last reached the device (RFC 3339)."),
                "reportToCloud": {"type": "boolean"},
                "reportCycle": {"type": "integer"},
                "message": _s("Why the device is not online (Shoal's addition)."),
            },
        },
    },
}

DEVICE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (GROUP, "DeviceModel"): DEVICE_MODEL_SCHEMA,
    (GROUP, "Device"): DEVICE_SCHEMA,
}
