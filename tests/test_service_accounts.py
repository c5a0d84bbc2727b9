"""ServiceAccounts: the default one and kube-root-ca.crt in every namespace, what a new pod
gets, and the TokenRequest subresource on a peer that cannot sign."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shoal.api import token_request, web
from shoal.api.routing import Target
from shoal.authz.service_account_tokens import TokenIssuer
from shoal.control.service_accounts import (
    MOUNT_PATH,
    ServiceAccountsController,
    admit_pod,
    volume_name,
)
from shoal.mesh import pki
from shoal.model.kinds import KindRegistry
from shoal.store.objects import Forbidden, ObjectStore
from shoal.store.replica import Replica
from tests.http_test_server import TestServer

REG = KindRegistry()
NS, SA, CM, POD = (REG.by_kind("v1", k) for k in ("Namespace", "ServiceAccount", "ConfigMap",
                                                   "Pod"))
CA_PEM = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"


async def _store() -> ObjectStore:
    s = ObjectStore(Replica(None, "pi-1"), REG)
    s.admission.append(lambda kind, obj: admit_pod(kind, obj, s.replica))
    assert NS
    await s.create(NS, {"metadata": {"name": "default"}})
    return s


async def test_every_namespace_gets_a_default_service_account_and_the_root_ca() -> None:
    s = await _store()
    assert NS and SA and CM
    await s.create(NS, {"metadata": {"name": "team"}})
    await ServiceAccountsController(s, CA_PEM).sync()
    for ns in ("default", "team"):
        assert s.find(SA, ns, "default") is not None
        assert s.find(CM, ns, "kube-root-ca.crt")["data"] == {"ca.crt": CA_PEM.decode()}


async def test_a_deleted_default_service_account_comes_back_and_an_edited_ca_is_reset() -> None:
    s = await _store()
    assert NS and SA and CM
    await s.create(NS, {"metadata": {"name": "team"}})
    c = ServiceAccountsController(s, CA_PEM)
    await c.sync()
    first = s.get(SA, "team", "default")["metadata"]["uid"]
    await s.delete(SA, "team", "default")
    cm = dict(s.get(CM, "team", "kube-root-ca.crt"), data={"ca.crt": "evil"})
    await s.update(CM, cm, "team", "kube-root-ca.crt")
    await c.sync()
    assert s.get(SA, "team", "default")["metadata"]["uid"] != first
    assert s.get(CM, "team", "kube-root-ca.crt")["data"]["ca.crt"] == CA_PEM.decode()


def _pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "initContainers": [{"name": "i", "image": "x"}],
        "containers": [{"name": "c", "image": "x"}], **spec}}


async def test_a_new_pod_gets_the_default_account_and_the_token_volume_in_every_container(
        ) -> None:
    s = await _store()
    assert POD
    pod = await s.create(POD, _pod(), "default")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default"
    vol = volume_name("default", "default")
    assert [v["name"] for v in spec["volumes"]] == [vol]
    sources = spec["volumes"][0]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"] == {"expirationSeconds": 3607, "path": "token"}
    for c in spec["initContainers"] + spec["containers"]:
        assert c["volumeMounts"] == [{"name": vol, "readOnly": True, "mountPath": MOUNT_PATH}]


async def test_the_volume_name_is_the_same_on_every_peer_and_for_every_pod_of_an_account(
        ) -> None:
    assert volume_name("default", "web") == volume_name("default", "web")
    assert volume_name("default", "web") != volume_name("default", "builder")
    assert volume_name("default", "web") != volume_name("other", "web")
    assert len(volume_name("default", "web")) == len("kube-api-access-") + 5
    s = await _store()
    assert POD
    one = await s.create(POD, _pod("web-1"), "default")
    two = await s.create(POD, _pod("web-2"), "default")
    # Two pods of one template get one spec (a create's checks of it are remembered).
    assert one["spec"] == two["spec"]


async def test_automount_false_on_the_pod_or_its_service_account_mounts_nothing() -> None:
    s = await _store()
    assert POD and SA
    pod = await s.create(POD, _pod(automountServiceAccountToken=False), "default")
    assert "volumes" not in pod["spec"]
    await s.create(SA, {"metadata": {"name": "quiet"}, "automountServiceAccountToken": False},
                   "default")
    pod = await s.create(POD, _pod("w2", serviceAccountName="quiet"), "default")
    assert "volumes" not in pod["spec"]


async def test_a_pod_naming_a_service_account_not_here_is_refused_as_kubernetes_does() -> None:
    s = await _store()
    assert POD
    with pytest.raises(Forbidden) as e:
        await s.create(POD, _pod(serviceAccountName="robot"), "default")
    assert e.value.message == ('pods "web" is forbidden: error looking up service account '
                               'default/robot: serviceaccount "robot" not found')


async def test_a_token_request_on_a_peer_without_the_ca_key_is_a_503_naming_the_signers(
        ) -> None:
    s = await _store()
    assert SA
    await s.create(SA, {"metadata": {"name": "default"}}, "default")
    ca = pki.create_ca()
    node = pki.issue(ca, "pi-2", organizations=("shoal:nodes",), client=True)
    issuer = TokenIssuer("pi-2", node.key_pem, node.cert_pem)
    requests = token_request.TokenRequests(lambda: issuer, signers=lambda: ["10.0.0.1:7443"])

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await token_request.serve(request, Target(SA, "default", "default", "token",
                                                             False), s, requests)
        except Exception as e:  # an ApiError: its status
            status = e.status()  # type: ignore[attr-defined]
            return web.json_response(status, status=status["code"])

    app = web.Application()
    app.router.add_post("/token", handle)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/token", data=orjson.dumps({"spec": {}}),
                              headers={"Content-Type": "application/json"})
        body = await r.json()
    assert r.status == 503 and body["reason"] == "ServiceUnavailable"
    assert "10.0.0.1:7443" in body["message"] and "pi-2" in body["message"]
