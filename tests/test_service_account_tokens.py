"""ServiceAccount tokens: who may sign what, and what every peer checks offline."""

from __future__ import annotations

import base64
import datetime
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from shoal.authz.service_account_tokens import (
    EXTRA_POD_NAME,
    ISSUER,
    Binding,
    NotASigner,
    TokenIssuer,
    verify,
)
from shoal.mesh import pki

NOW = time.time()  # the certificates are valid from now on
CA = pki.create_ca()
OTHER_CA = pki.create_ca("another-ca")


def _node(name: str, ca: pki.KeyPair = CA, orgs: tuple[str, ...] = ("shoal:nodes",)
          ) -> pki.KeyPair:
    return pki.issue(ca, name, organizations=orgs, client=True, server=True)


PI1, PI2 = _node("pi-1"), _node("pi-2")


class Objects:
    """A replica's reads over a dict."""

    def __init__(self) -> None:
        self.objs: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(self, resource: str, ns: str, name: str, uid: str, **rest: Any) -> None:
        self.objs[(resource, ns, name)] = {"metadata": {"name": name, "namespace": ns,
                                                        "uid": uid}, **rest}

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def objects() -> Objects:
    o = Objects()
    o.add("serviceaccounts", "team", "default", "sa-uid")
    o.add("pods", "team", "web", "pod-uid", spec={"nodeName": "pi-1",
                                                  "serviceAccountName": "default"})
    return o


def _issuer(node: pki.KeyPair, name: str, signer: bool = False) -> TokenIssuer:
    return TokenIssuer(name, node.key_pem, node.cert_pem, CA.key_pem if signer else None)


POD = Binding("web", "pod-uid", "pi-1", "node-uid")


def _check(token: str, objects: Objects, now: float = NOW + 10) -> str | None:
    user = verify(token, ca_cert_pem=CA.cert_pem, reader=objects, now=now)
    return user.username if user is not None else None


def test_a_token_a_node_signs_for_its_own_pod_names_the_service_account(objects: Objects
                                                                         ) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       binding=POD).token
    user = verify(token, ca_cert_pem=CA.cert_pem, reader=objects, now=NOW + 10)
    assert user is not None
    assert user.username == "system:serviceaccount:team:default"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:team",
                           "system:authenticated")
    assert user.uid == "sa-uid"
    assert user.extra[EXTRA_POD_NAME] == ("web",)


def test_the_claims_are_kubernetes_claims(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       expiration_seconds=3607, binding=POD).token
    header, body = (json.loads(base64.urlsafe_b64decode(p + "==")) for p in token.split(".")[:2])
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1
    assert body["iss"] == ISSUER and body["aud"] == [ISSUER]
    assert body["sub"] == "system:serviceaccount:team:default"
    assert body["exp"] - body["iat"] == 3607 and body["nbf"] == body["iat"]
    assert body["kubernetes.io"] == {
        "namespace": "team", "serviceaccount": {"name": "default", "uid": "sa-uid"},
        "pod": {"name": "web", "uid": "pod-uid"}, "node": {"name": "pi-1", "uid": "node-uid"}}


def test_a_node_key_cannot_sign_for_a_pod_bound_to_another_node(objects: Objects) -> None:
    # pi-2's key, claiming pi-1's pod: the certificate's CN is not the pod's node.
    forged = _issuer(PI2, "pi-2").issue("team", "default", "sa-uid", now=NOW,
                                        binding=Binding("web", "pod-uid", "pi-2")).token
    assert _check(forged, objects) is None


def test_a_node_will_not_issue_an_unbound_token_and_one_it_forges_is_refused(
        objects: Objects) -> None:
    with pytest.raises(NotASigner):
        _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW)
    from shoal.authz.service_account_tokens import _private_key as key_of
    from shoal.authz.service_account_tokens import claims, sign
    payload = claims("team", "default", "sa-uid", [], NOW, 3600, Binding())
    x5c = [base64.b64encode(PI1.cert.public_bytes(serialization.Encoding.DER)).decode()]
    forged = sign(payload, key_of(PI1.key_pem), {"x5c": x5c})
    assert _check(forged, objects) is None


def test_a_token_signed_by_a_key_the_cluster_ca_did_not_certify_is_refused(
        objects: Objects) -> None:
    stranger = _node("pi-1", OTHER_CA)
    token = _issuer(stranger, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                            binding=POD).token
    assert _check(token, objects) is None
    foreign_signer = TokenIssuer("x", PI1.key_pem, PI1.cert_pem, OTHER_CA.key_pem)
    assert _check(foreign_signer.issue("team", "default", "sa-uid", now=NOW).token,
                  objects) is None


def test_a_certificate_that_is_not_a_node_certificate_cannot_sign(objects: Objects) -> None:
    user_cert = _node("pi-1", orgs=("system:masters",))
    token = _issuer(user_cert, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                             binding=POD).token
    assert _check(token, objects) is None


def test_an_expired_token_is_refused(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       expiration_seconds=600, binding=POD).token
    assert _check(token, objects, now=NOW + 500) is not None
    assert _check(token, objects, now=NOW + 600 + 3600) is None


def test_a_token_for_another_audience_is_refused(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       audiences=["vault"], binding=POD).token
    assert _check(token, objects) is None
    assert verify(token, ca_cert_pem=CA.cert_pem, reader=objects, now=NOW,
                  audiences=("vault",)) is not None


def test_deleting_the_service_account_or_the_pod_revokes_its_tokens(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       binding=POD).token
    assert _check(token, objects) is not None
    objects.add("pods", "team", "web", "new-pod-uid", spec={"nodeName": "pi-1"})
    assert _check(token, objects) is None  # the pod was recreated: a new uid
    unbound = _issuer(PI1, "pi-1", signer=True).issue("team", "default", "sa-uid", now=NOW)
    assert _check(unbound.token, objects) == "system:serviceaccount:team:default"
    del objects.objs[("serviceaccounts", "team", "default")]
    assert _check(unbound.token, objects) is None


def test_a_tampered_token_is_refused(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1", signer=True).issue("team", "default", "sa-uid", now=NOW).token
    head, body, sig = token.split(".")
    claims_ = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims_["kubernetes.io"]["namespace"] = "kube-system"
    claims_["sub"] = "system:serviceaccount:kube-system:default"
    objects.add("serviceaccounts", "kube-system", "default", "sa-uid")
    evil = base64.urlsafe_b64encode(json.dumps(claims_).encode()).decode().rstrip("=")
    assert _check(f"{head}.{evil}.{sig}", objects) is None
    assert _check("a.b.c", objects) is None


def test_a_token_verified_once_is_refused_once_its_node_certificate_has_expired(
        objects: Objects) -> None:
    # Its own clock: NOW is taken when the module loads, which under load is long before.
    now = time.time()
    short = pki.issue(CA, "pi-1", organizations=("shoal:nodes",), client=True,
                      lifetime=datetime.timedelta(minutes=5))
    token = _issuer(short, "pi-1").issue("team", "default", "sa-uid", now=now,
                                         expiration_seconds=3600, binding=POD).token
    assert _check(token, objects, now=now + 10) is not None  # the signature is remembered
    assert _check(token, objects, now=now + 600) is None  # the certificate is not


def test_a_remembered_token_still_follows_the_replica(objects: Objects) -> None:
    token = _issuer(PI1, "pi-1").issue("team", "default", "sa-uid", now=NOW,
                                       binding=POD).token
    for _ in range(3):
        assert _check(token, objects) is not None
    objects.add("pods", "team", "web", "pod-uid", spec={"nodeName": "pi-2",
                                                        "serviceAccountName": "default"})
    assert _check(token, objects) is None  # the pod is bound elsewhere now


def test_each_identity_a_token_names_is_one_user_object(objects: Objects) -> None:
    """So a pod's requests reuse the authorization attributes kept per user object
    (``api.authorization.request_attributes``), as the admin's do."""
    issuer = _issuer(PI1, "pi-1")
    first = issuer.issue("team", "default", "sa-uid", now=NOW, binding=POD).token
    again = issuer.issue("team", "default", "sa-uid", now=NOW + 1, binding=POD).token
    users = [verify(t, ca_cert_pem=CA.cert_pem, reader=objects, now=NOW + 10)
             for t in (first, first, again)]
    assert users[0] is not None and users[0] is users[1]  # a pod resends one token for an hour
    # Another token of the same pod has its own credential id (audit tells them apart).
    assert users[2] is not None and users[2] is not users[0] and users[2] == users[0]
    objects.add("pods", "team", "db", "db-uid", spec={"nodeName": "pi-1",
                                                      "serviceAccountName": "default"})
    other = issuer.issue("team", "default", "sa-uid", now=NOW,
                         binding=Binding("db", "db-uid", "pi-1", "node-uid")).token
    theirs = verify(other, ca_cert_pem=CA.cert_pem, reader=objects, now=NOW + 10)
    assert theirs is not None and theirs is not users[0]
    assert theirs.extra[EXTRA_POD_NAME] == ("db",)
