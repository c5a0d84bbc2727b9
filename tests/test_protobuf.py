"""Kubernetes protobuf request bodies, as kubectl 1.3x's typed clients send them.

The fixtures are real request bodies: kubectl 1.37.1 ``-v=10`` logs each request body as a hex
dump, and these are those dumps for ``kubectl create ... --dry-run=server`` against Shoal. Each
expected value is what the same command prints with ``--dry-run=client -o json`` (the JSON the
object marshals to), less its ``null``s. The synthetic bodies, built with the small encoder
below, cover what no kubectl command sends: times, negative and packed integers, leases,
DeleteOptions and the error paths. The tests marked slow run real kubectl against a real server.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest

from shoal.api import bodies, protobuf
from shoal.api.errors import ApiError
from shoal.api.protobuf import MAGIC, PROTOBUF, ProtobufError, decode
from tests.conftest import IN_CI, ROOT, ShoalProcess

# -- real bodies -----------------------------------------------------------------------------

# kubectl create namespace team-a
NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d657370616365121e0a160a067465616d2d6112001a0022002a00320038"
    "00420012001a020a001a002200"
)
# kubectl create configmap settings --from-literal=mode=fast --from-literal=empty=
CONFIGMAP = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d617012330a180a0873657474696e677312001a0022002a0032"
    "003800420012090a05656d7074791200120c0a046d6f64651204666173741a002200"
)
# kubectl create configmap blob --from-file=bin.dat  (bin.dat holds the bytes 00 01 ff)
CONFIGMAP_BINARY = bytes.fromhex(
    "6b3873000a0f0a0276311209436f6e6669674d617012260a140a04626c6f6212001a0022002a003200380042"
    "001a0e0a0762696e2e64617412030001ff1a002200"
)
# kubectl create secret generic creds --from-literal=user=admin --from-literal=pass=s3cr3t
SECRET = bytes.fromhex(
    "6b3873000a0c0a027631120653656372657412380a150a05637265647312001a0022002a0032003800420012"
    "0e0a04706173731206733363723374120d0a0475736572120561646d696e1a001a002200"
)
# kubectl create serviceaccount robot
SERVICEACCOUNT = bytes.fromhex(
    "6b3873000a140a027631120e536572766963654163636f756e7412170a150a05726f626f7412001a0022002a"
    "003200380042001a002200"
)
# kubectl create deployment web --image=nginx --replicas=2 --port=80
DEPLOYMENT = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b8010a1f0a0377656212001a0022002a"
    "003200380042005a0a0a0361707012037765621286010802120c0a0a0a0361707012037765621a6c0a1c0a00"
    "12001a0022002a003200380042005a0a0a036170701203776562124c122e0a056e67696e7812056e67696e78"
    "2a00320a0a001000185022002a0042006a007200800100880100900100a201001a00320042004a0052005800"
    "600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200"
)
# kubectl create deployment idle --image=nginx --replicas=0
DEPLOYMENT_ZERO = bytes.fromhex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412af010a210a0469646c6512001a002200"
    "2a003200380042005a0b0a03617070120469646c65127c0800120d0a0b0a03617070120469646c651a610a1d"
    "0a0012001a0022002a003200380042005a0b0a03617070120469646c65124012220a056e67696e7812056e67"
    "696e782a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01"
    "009a0100c2010022020a00280038001a0c0800100018002000280038001a002200"
)
# kubectl create job once --image=busybox -- echo hi
JOB = bytes.fromhex(
    "6b3873000a0f0a0862617463682f763112034a6f621288010a140a046f6e636512001a0022002a0032003800"
    "4200126632640a100a0012001a0022002a003200380042001250122d0a046f6e6365120762757379626f781a"
    "046563686f1a0268692a0042006a007200800100880100900100a201001a054e65766572320042004a005200"
    "5800600068008201008a01009a0100c201001a082000280030003a001a002200"
)
# kubectl create service clusterip front --tcp=80:8080
SERVICE = bytes.fromhex(
    "6b3873000a0d0a027631120753657276696365126f0a230a0566726f6e7412001a0022002a00320038004200"
    "5a0c0a03617070120566726f6e7412440a1b0a0738302d38303830120354435018502207080010903f1a0028"
    "00120c0a03617070120566726f6e741a002209436c757374657249503a00420052005a00600068001a020a00"
    "1a002200"
)
# kubectl debug rich --copy-to=richcopy3 --keep-liveness --keep-readiness --keep-startup
#   --keep-labels --image=busybox --container=dbg -- sleep 1
RICH_POD = bytes.fromhex(
    "6b3873000a090a0276311203506f6412e9090a380a0972696368636f70793312001a0764656661756c742200"
    "2a003200380042005a0b0a036170701204726963685a090a05656d70747912001297090a240a03636667121d"
    "9a011a0a050a03636d31120c0a01611205612e747874180018a40320000a120a03736563120b32090a027331"
    "18a40320010a190a03746d70121212100a064d656d6f727912060a0436344d690a120a04686f7374120a0a08"
    "0a042f746d7012000a430a0470726f6a123bd201380a0e220c0a0010901c1a05746f6b656e0a2312210a1f0a"
    "066c6162656c7312150a027631120f6d657461646174612e6c6162656c7310a4031292040a046d61696e1207"
    "62757379626f781a0273681a022d631a0022002a012f32120a0468747470100018903f22035443502a003a05"
    "0a014112003a150a014212001a0e1a0c0a050a03636d3112016118003a120a014312001a0b22090a040a0273"
    "311201753a1b0a014412001a140a120a027631120c7374617475732e706f6449503a210a014512001a1a1218"
    "0a00120d6c696d6974732e6d656d6f72791a050a03314d6942430a0d0a0363707512060a043530306d0a110a"
    "066d656d6f727912070a053132384d69120d0a0363707512060a043235306d12100a066d656d6f727912060a"
    "0436344d694a110a0363666710011a042f636667220032004a120a03746d7010001a042f746d702201783200"
    "52140a080a060a0474727565100018012005280130015a2c0a20121e0a012f120a080110001a04687474701a"
    "002204485454502a050a0158120010001802200a2801300362100a080a060a04747275651204220208016a14"
    "2f6465762f7465726d696e6174696f6e2d6c6f67720c49664e6f7450726573656e747a390a170a104e45545f"
    "42494e445f534552564943451203414c4c100020e8073001380040005a130a094c6f63616c686f7374120670"
    "2e6a736f6e8001018801009001009a010d0a02505f12070a050a03636d319a010c0a001a080a040a02733110"
    "01a2010446696c65b2011b0a0d1a0b0a07080010903f1a00120010001801200a28013003380012400a036462"
    "67120762757379626f781a05736c6565701a01312a0042006a0072007a0e0a0c0a0a5359535f505452414345"
    "800100880100900100a2010446696c651a06416c776179732000320c436c7573746572466972737442004a00"
    "52005800600068007239100018002001200228d00f3a1a0a126e65742e636f72652e736f6d6178636f6e6e12"
    "043130323452100a0e52756e74696d6544656661756c748201008a01009201250a230a210a1f0a1d0a106b75"
    "6265726e657465732e696f2f6f731202496e1a056c696e75789a011164656661756c742d7363686564756c65"
    "72a201570a0473696465120762757379626f781a05736c6565701a04333630302a0042006a142f6465762f74"
    "65726d696e6174696f6e2d6c6f677206416c77617973800100880100900100a2010446696c65c20106416c77"
    "617973a80100b2011a0a016b12064578697374731a0022094e6f457865637574652800ba01100a0831302e30"
    "2e302e31120161120162c20100c80100d201150a07312e312e312e311a0a0a056e646f7473120132d80101f0"
    "01008a023a080112047a6f6e651a0e5363686564756c65416e79776179220d0a0b0a03617070120472696368"
    "4211706f642d74656d706c6174652d68617368a802001a130a001a0022002a0032004a005a0072008801001a"
    "002200"
)


CREATED: list[tuple[str, bytes, dict[str, Any]]] = [
    ("namespace", NAMESPACE, {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
        "spec": {}, "status": {},
    }),
    ("configmap", CONFIGMAP, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"empty": "", "mode": "fast"},
    }),
    ("configmap-binary", CONFIGMAP_BINARY, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"},
        "binaryData": {"bin.dat": "AAH/"},
    }),
    ("secret", SECRET, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"pass": "czNjcjN0", "user": "YWRtaW4="},
    }),
    ("serviceaccount", SERVICEACCOUNT, {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"},
    }),
    ("deployment", DEPLOYMENT, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                         "ports": [{"containerPort": 80}], "resources": {}}]},
            },
            "strategy": {},
        },
        "status": {},
    }),
    ("deployment-zero", DEPLOYMENT_ZERO, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "idle", "labels": {"app": "idle"}},
        "spec": {
            "replicas": 0, "selector": {"matchLabels": {"app": "idle"}},
            "template": {
                "metadata": {"labels": {"app": "idle"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
            },
            "strategy": {},
        },
        "status": {},
    }),
    ("job", JOB, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"template": {
            "metadata": {},
            "spec": {"containers": [{"name": "once", "image": "busybox",
                                     "command": ["echo", "hi"], "resources": {}}],
                     "restartPolicy": "Never"},
        }},
        "status": {},
    }),
    ("service", SERVICE, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "front", "labels": {"app": "front"}},
        "spec": {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                 "selector": {"app": "front"}, "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    }),
]


@pytest.mark.parametrize(("body", "want"), [(b, w) for _, b, w in CREATED],
                         ids=[name for name, _, _ in CREATED])
def test_a_kubectl_create_body_decodes_to_the_json_kubectl_would_send(
        body: bytes, want: dict[str, Any]) -> None:
    assert decode(body) == want


def test_a_whole_pod_from_kubectl_debug_keeps_pointer_zeros_and_inlines_embedded_structs() -> None:
    pod = decode(RICH_POD)
    assert pod["metadata"] == {"name": "richcopy3", "namespace": "default",
                               "labels": {"app": "rich", "empty": ""}}
    spec = pod["spec"]
    # Go pointers set to zero or false are values, not omitted defaults.
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["hostUsers"] is False
    assert spec["terminationGracePeriodSeconds"] == 0
    assert spec["priority"] == 0
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["securityContext"]["runAsNonRoot"] is False
    assert spec["securityContext"]["supplementalGroups"] == [1, 2]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["tolerations"] == [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 0}]
    # Volume's VolumeSource and the selectors' LocalObjectReference are inlined, as in JSON.
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cfg"]["configMap"] == {
        "name": "cm1", "items": [{"key": "a", "path": "a.txt", "mode": 0}],
        "defaultMode": 420, "optional": False}
    assert volumes["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    assert volumes["host"]["hostPath"] == {"path": "/tmp", "type": ""}
    assert volumes["proj"]["projected"]["sources"][0] == {
        "serviceAccountToken": {"expirationSeconds": 3600, "path": "token"}}
    main = spec["containers"][0]
    assert main["command"] == ["sh", "-c", ""] and main["args"] == [""]
    assert main["env"][0] == {"name": "A"}  # value "" has omitempty
    assert main["env"][1]["valueFrom"] == {
        "configMapKeyRef": {"name": "cm1", "key": "a", "optional": False}}
    assert main["env"][4]["valueFrom"] == {
        "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert main["resources"] == {"limits": {"cpu": "500m", "memory": "128Mi"},
                                 "requests": {"cpu": "250m", "memory": "64Mi"}}
    # Probe's handler is inlined; the port is an IntOrString holding a name.
    assert main["readinessProbe"]["httpGet"] == {
        "path": "/", "port": "http", "scheme": "HTTP", "httpHeaders": [{"name": "X", "value": ""}]}
    assert main["startupProbe"]["tcpSocket"] == {"port": 8080}
    assert main["startupProbe"]["terminationGracePeriodSeconds"] == 0
    assert main["lifecycle"] == {"postStart": {"exec": {"command": ["true"]}},
                                 "preStop": {"sleep": {"seconds": 1}}}
    assert main["securityContext"]["privileged"] is False
    assert main["securityContext"]["runAsGroup"] == 0
    assert main["stdin"] is True and "tty" not in main
    assert main["envFrom"] == [{"prefix": "P_", "configMapRef": {"name": "cm1"}},
                               {"secretRef": {"name": "s1", "optional": True}}]
    # Fields added to core/v1 after k8s-proto's build come from the module's own table.
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert spec["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "rich"}}, "matchLabelKeys": ["pod-template-hash"]}]
    assert spec["containers"][1]["name"] == "dbg"


# -- synthetic bodies ------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as Go writes them: ten bytes, two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def vint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def data(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def text(number: int, value: str) -> bytes:
    return data(number, value.encode())


def msg(number: int, *fields: bytes) -> bytes:
    return data(number, b"".join(fields))


def envelope(api_version: str, kind: str, *fields: bytes, encoding: str = "") -> bytes:
    return (MAGIC + msg(1, text(1, api_version), text(2, kind)) + msg(2, *fields)
            + text(3, encoding) + text(4, ""))


def error_of(body: bytes) -> ProtobufError:
    with pytest.raises(ProtobufError) as e:
        decode(body)
    return e.value


def test_times_micro_times_and_managed_fields_get_their_json_forms() -> None:
    t = vint(1, 1_700_000_000)
    body = envelope(
        "v1", "Event",
        msg(1, text(1, "e1"), text(3, "default"), msg(8, t),
            msg(9),  # the zero time: null in JSON, so left out
            msg(17, text(1, "kubectl"), text(2, "Update"), text(3, "v1"), msg(4, t),
                text(6, "FieldsV1"), msg(7, data(1, b'{"f:count":{}}')))),
        msg(2, text(1, "Pod"), text(3, "p")),
        text(3, "Started"),
        vint(8, 0),  # count: an int32 with omitempty
        text(9, "Normal"),
        msg(10, t, vint(2, 123_456_789)),
    )
    assert decode(body) == {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {
            "name": "e1", "namespace": "default", "creationTimestamp": "2023-11-14T22:13:20Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                               "time": "2023-11-14T22:13:20Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:count": {}}}],
        },
        "involvedObject": {"kind": "Pod", "name": "p"},
        "reason": "Started", "type": "Normal", "eventTime": "2023-11-14T22:13:20.123456Z",
    }


def test_negative_packed_and_unpacked_integers_and_optional_booleans() -> None:
    body = envelope(
        "v1", "Pod",
        msg(1, text(1, "p")),
        msg(2,
            msg(2, text(1, "c"), text(2, "busybox")),
            vint(11, 0),  # hostNetwork: a plain bool with omitempty, so false is left out
            msg(14, vint(4, 5), data(4, _varint(6) + _varint(7)), vint(2, -1)),
            vint(25, -5),  # priority: *int32, sign-extended on the wire
            vint(30, 0),  # enableServiceLinks: *bool, so false is kept
            vint(37, 0)),  # hostUsers: newer than k8s-proto, from the module's table
    )
    spec = decode(body)["spec"]
    assert spec == {
        "containers": [{"name": "c", "image": "busybox"}],
        "securityContext": {"supplementalGroups": [5, 6, 7], "runAsUser": -1},
        "priority": -5, "enableServiceLinks": False, "hostUsers": False,
    }


def test_an_int_or_string_holding_a_name_and_a_service_with_newer_fields() -> None:
    body = envelope(
        "v1", "Service",
        msg(1, text(1, "s")),
        msg(2, msg(1, text(2, "TCP"), vint(3, 80), msg(4, vint(1, 1), vint(2, 0), text(3, "http")),
                   text(6, "kubernetes.io/h2c")),
            text(17, "SingleStack"), text(19, "IPv4"), vint(20, 0)),
    )
    assert decode(body)["spec"] == {
        "ports": [{"protocol": "TCP", "port": 80, "targetPort": "http",
                   "appProtocol": "kubernetes.io/h2c"}],
        "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
        "allocateLoadBalancerNodePorts": False,
    }


def test_a_lease_as_client_go_leader_election_writes_it() -> None:
    body = envelope(
        "coordination.k8s.io/v1", "Lease",
        msg(1, text(1, "leader"), text(3, "kube-system")),
        msg(2, text(1, "pod-a"), vint(2, 15), msg(3, vint(1, 1_700_000_000)),
            msg(4, vint(1, 1_700_000_010), vint(2, 5_000)), vint(5, 0)),
    )
    assert decode(body) == {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader", "namespace": "kube-system"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                 "acquireTime": "2023-11-14T22:13:20.000000Z",
                 "renewTime": "2023-11-14T22:13:30.000005Z", "leaseTransitions": 0},
    }


def test_delete_options_decode_under_any_group_version() -> None:
    body = envelope("apps/v1", "DeleteOptions", vint(1, 0), msg(2, text(1, "uid-1")),
                    text(4, "Foreground"), text(5, "All"))
    assert decode(body) == {
        "apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
        "preconditions": {"uid": "uid-1"}, "propagationPolicy": "Foreground", "dryRun": ["All"],
    }


def test_a_field_number_the_server_does_not_know_is_a_415_naming_it() -> None:
    pod = envelope("v1", "Pod", msg(1, text(1, "p")), msg(2, msg(43, text(1, "g"))))
    e = error_of(pod)
    assert e.code == 415
    assert "spec: field 43 of v1 PodSpec is not known" in e.message
    # Fields that Kubernetes has removed since k8s-proto's build are not decoded either.
    assert error_of(envelope("v1", "ConfigMap", msg(1, text(15, "old")))).code == 415


def test_a_kind_without_a_table_is_a_415_that_says_to_send_json() -> None:
    e = error_of(envelope("storage.k8s.io/v1", "StorageClass", msg(1, text(1, "r"))))
    assert e.code == 415
    assert e.message == ("protobuf bodies of storage.k8s.io/v1 StorageClass are not "
                         "supported by this server; send JSON")
    assert error_of(envelope("v1", "ConfigMap", encoding="gzip")).code == 415


@pytest.mark.parametrize("body", [
    b'{"kind": "ConfigMap"}',  # no magic
    NAMESPACE[:-3],  # truncated
    MAGIC + msg(1, text(1, "v1")) + msg(2),  # no kind
    envelope("v1", "ConfigMap", vint(1, 7)),  # a varint where the metadata message goes
    envelope("v1", "ConfigMap", msg(1, data(1, b"\xff\xfe"))),  # a name that is not UTF-8
    envelope("v1", "ConfigMap", msg(1, b"\x0b")),  # wire type 3: groups are not used
    MAGIC + b"\x80",  # a varint that never ends
], ids=["magic", "truncated", "no-kind", "wire-type", "utf-8", "group", "varint"])
def test_malformed_bodies_are_400(body: bytes) -> None:
    assert error_of(body).code == 400


def test_read_object_maps_protobuf_errors_to_api_errors() -> None:
    assert bodies.parse(NAMESPACE, PROTOBUF)["metadata"] == {"name": "team-a"}
    with pytest.raises(ApiError) as e:
        bodies.parse(NAMESPACE[:-3], PROTOBUF)
    assert e.value.code == 400
    with pytest.raises(ApiError) as e:
        bodies.parse(envelope("node.k8s.io/v1", "RuntimeClass"), PROTOBUF)
    assert e.value.code == 415
    bodies.check_media_type(PROTOBUF)
    with pytest.raises(ApiError) as e:
        bodies.check_media_type("application/cbor")
    assert e.value.code == 415


def test_the_tables_are_consistent_with_the_descriptors() -> None:
    reg = protobuf.registry()
    # k8s-proto's descriptors, as generated into shoal.model.schemas, are there (the
    # envelope and core/v1 come only from them).
    assert reg[protobuf.UNKNOWN].fields[2].name == "raw"
    assert reg["k8s.io.api.core.v1.PodSpec"].fields[2].name == "containers"
    for m in reg.values():
        for f in m.fields.values():
            assert (f.type in protobuf._WIRE or f.type in reg
                    or f.type in protobuf._SPECIAL), (m.name, f)
    for name, names in protobuf._KEEP_ZERO.items():
        fields = {f.name: f for f in reg[protobuf._full(name)].fields.values()}
        for n in names.split():
            assert n in fields and fields[n].keep_zero, (name, n)
    for name, inline in protobuf._INLINE.items():
        assert any(f.inline and f.name == inline
                   for f in reg[protobuf._full(name)].fields.values()), name


# -- real kubectl against a real server ------------------------------------------------------

slow = pytest.mark.slow


def getj(node: ShoalProcess, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(node.kubectl("get", *args, "-o", "json").stdout)
    return out


@slow
def test_kubectl_create_namespace(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "namespace", "pb-team")
    ns = getj(node, "namespace", "pb-team")
    assert ns["metadata"]["name"] == "pb-team"
    assert ns["status"]["phase"] == "Active"


@slow
def test_kubectl_create_configmap_from_literals(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "configmap", "pb-settings", "--from-literal=mode=fast",
                 "--from-literal=empty=")
    assert getj(node, "configmap", "pb-settings")["data"] == {"mode": "fast", "empty": ""}


@slow
def test_kubectl_create_secret_generic(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "secret", "generic", "pb-creds", "--from-literal=user=admin",
                 "--from-literal=pass=s3cr3t")
    out = node.kubectl("get", "secret", "pb-creds", "-o", "jsonpath={.data.user}").stdout
    assert out == base64.b64encode(b"admin").decode()
    secret = getj(node, "secret", "pb-creds")
    assert base64.b64decode(secret["data"]["pass"]) == b"s3cr3t"
    assert secret["type"] == "Opaque"


@slow
def test_kubectl_create_serviceaccount(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "serviceaccount", "pb-robot")
    assert getj(node, "serviceaccount", "pb-robot")["metadata"]["namespace"] == "default"


@slow
def test_kubectl_create_deployment(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "deployment", "pb-web", "--image=nginx", "--replicas=2", "--port=80")
    spec = getj(node, "deployment", "pb-web")["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"app": "pb-web"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "pb-web"}
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx"
    assert container["ports"][0]["containerPort"] == 80
    # replicas is a *int32: an explicit 0 must not become the default of 1.
    node.kubectl("create", "deployment", "pb-idle", "--image=nginx", "--replicas=0")
    assert getj(node, "deployment", "pb-idle")["spec"]["replicas"] == 0


@slow
def test_kubectl_create_job(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "job", "pb-once", "--image=busybox", "--", "echo", "hi")
    pod_spec = getj(node, "job", "pb-once")["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["containers"][0]["image"] == "busybox"
    assert pod_spec["containers"][0]["command"] == ["echo", "hi"]


@slow
def test_kubectl_run(shoal_module: ShoalProcess) -> None:
    # kubectl run sends JSON still (it builds the pod without the typed client): both work.
    node = shoal_module
    node.kubectl("run", "pb-pod", "--image=busybox", "--", "sleep", "10")
    pod = getj(node, "pod", "pb-pod")
    assert pod["metadata"]["labels"] == {"run": "pb-pod"}
    assert pod["spec"]["containers"][0]["image"] == "busybox"
    assert pod["spec"]["containers"][0]["args"] == ["sleep", "10"]


@slow
def test_kubectl_create_service_clusterip(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    node.kubectl("create", "service", "clusterip", "pb-front", "--tcp=80:8080")
    svc = getj(node, "service", "pb-front")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "pb-front"}
    port = svc["spec"]["ports"][0]
    assert (port["port"], port["targetPort"], port["protocol"]) == (80, 8080, "TCP")
    assert svc["spec"]["clusterIP"]  # allocated by the server


def _older_kubectls() -> list[str]:
    pinned = ROOT / ".venv" / "kubectl-1.36" / "bin" / "kubectl"
    found = [str(pinned)] if pinned.exists() else []
    if os.path.exists("/usr/bin/kubectl"):
        found.append("/usr/bin/kubectl")
    return found


@slow
@pytest.mark.parametrize("which", [0, 1], ids=["kubectl-1.36", "system-kubectl"])
def test_an_older_kubectl_creates_with_protobuf_too(shoal_module: ShoalProcess,
                                                    which: int) -> None:
    olds = _older_kubectls()
    if which >= len(olds):
        if IN_CI and which == 0:
            pytest.fail("the bootstrap did not install kubectl 1.36 (`make venv`)")
        pytest.skip("no such kubectl on this machine")
    node = shoal_module
    name = f"pb-old-{which}"
    node.kubectl("create", "configmap", name, "--from-literal=k=v", binary=olds[which])
    node.kubectl("create", "deployment", name, "--image=nginx", "--replicas=0",
                 binary=olds[which])
    assert getj(node, "configmap", name)["data"] == {"k": "v"}
    assert getj(node, "deployment", name)["spec"]["replicas"] == 0


def raw(node: ShoalProcess, method: str, path: str, body: bytes,
        content_type: str = PROTOBUF) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(node.data_dir / "pki" / "ca.crt"))
    token = (node.data_dir / "pki" / "admin.token").read_text().strip()
    req = urllib.request.Request(node.url + path, data=body, method=method, headers={
        "Content-Type": content_type, "Accept": "application/json",
        "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@slow
def test_protobuf_bodies_over_raw_http(shoal_module: ShoalProcess) -> None:
    node = shoal_module
    lease = envelope("coordination.k8s.io/v1", "Lease", msg(1, text(1, "pb-leader")),
                     msg(2, text(1, "pod-a"), vint(2, 15), msg(4, vint(1, 1_700_000_000))))
    code, body = raw(node, "POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                     lease)
    assert code == 201, body
    assert body["spec"] == {"holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                            "renewTime": "2023-11-14T22:13:20.000000Z"}
    uid = body["metadata"]["uid"]
    # A DELETE may carry protobuf DeleteOptions, as client-go's typed Delete sends them: the
    # uid precondition is read from the body.
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/pb-leader"
    for precondition, want in (("not-the-uid", 409), (uid, 200)):
        options = envelope("coordination.k8s.io/v1", "DeleteOptions",
                           msg(2, text(1, precondition)))
        code, body = raw(node, "DELETE", path, options)
        assert code == want, body
    assert raw(node, "GET", path, b"")[0] == 404
    code, body = raw(node, "POST", "/api/v1/namespaces/default/configmaps",
                     envelope("v1", "ConfigMap", msg(1, text(1, "x")), vint(99, 1)))
    assert code == 415 and "field 99 of v1 ConfigMap" in body["message"]
    code, body = raw(node, "POST", "/api/v1/namespaces/default/configmaps",
                     b"\xd9\xd9\xf7", content_type="application/cbor")
    assert code == 415, body
