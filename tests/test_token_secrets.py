"""Token Secrets: a kubernetes.io/service-account-token Secret gets a token that verifies
as its ServiceAccount, on a signer peer, and stops verifying once the Secret goes."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from shoal.authz.service_account_tokens import TokenIssuer, verify
from shoal.control.token_secrets import NAME_ANNOTATION, TOKEN_SECRET, UID_ANNOTATION, TokenSecrets
from shoal.mesh import pki
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
NS, SA, SECRET = (REG.by_kind("v1", k) for k in ("Namespace", "ServiceAccount", "Secret"))
CA = pki.create_ca()
NODE = pki.issue(CA, "pi-1", organizations=("shoal:nodes",), client=True, server=True)
SIGNER = TokenIssuer("pi-1", NODE.key_pem, NODE.cert_pem, CA.key_pem)
NOT_A_SIGNER = TokenIssuer("pi-1", NODE.key_pem, NODE.cert_pem)


async def _store() -> ObjectStore:
    s = ObjectStore(Replica(None, "pi-1"), REG)
    assert NS and SA
    await s.create(NS, {"metadata": {"name": "team"}})
    return s


def _token_secret(name: str, account: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {NAME_ANNOTATION: account}, **meta},
            "type": TOKEN_SECRET}


def _data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _user(token: str, s: ObjectStore) -> str | None:
    user = verify(token, ca_cert_pem=CA.cert_pem, reader=s.replica, now=time.time())
    return user.username if user is not None else None


async def test_a_token_secret_gets_a_token_of_its_service_account_the_ca_and_the_namespace(
        ) -> None:
    s = await _store()
    assert SA and SECRET
    sa = await s.create(SA, {"metadata": {"name": "robot"}}, "team")
    await s.create(SECRET, _token_secret("robot-token", "robot"), "team")
    await s.create(SECRET, {"metadata": {"name": "plain"}, "data": {"k": "dg=="}}, "team")
    assert not await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    secret = s.get(SECRET, "team", "robot-token")
    data = _data(secret)
    assert data["ca.crt"] == CA.cert_pem.decode()
    assert data["namespace"] == "team"
    assert secret["metadata"]["annotations"][UID_ANNOTATION] == sa["metadata"]["uid"]
    assert _user(data["token"], s) == "system:serviceaccount:team:robot"
    claims = json.loads(base64.urlsafe_b64decode(data["token"].split(".")[1] + "=="))
    assert claims["kubernetes.io"]["secret"] == {
        "name": "robot-token", "uid": secret["metadata"]["uid"]}
    assert s.get(SECRET, "team", "plain").get("data") == {"k": "dg=="}  # another type
    # A second pass keeps the token it gave.
    await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    assert _data(s.get(SECRET, "team", "robot-token"))["token"] == data["token"]


async def test_deleting_the_token_secret_revokes_its_token() -> None:
    s = await _store()
    assert SA and SECRET
    await s.create(SA, {"metadata": {"name": "robot"}}, "team")
    await s.create(SECRET, _token_secret("robot-token", "robot"), "team")
    await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    token = _data(s.get(SECRET, "team", "robot-token"))["token"]
    await s.delete(SECRET, "team", "robot-token")
    assert _user(token, s) is None
    # A new Secret of the same name is another Secret: the old token stays revoked.
    await s.create(SECRET, _token_secret("robot-token", "robot"), "team")
    assert _user(token, s) is None


async def test_a_token_secret_waits_for_its_service_account_and_for_a_signer() -> None:
    s = await _store()
    assert SA and SECRET
    await s.create(SECRET, _token_secret("later-token", "later"), "team")
    await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    assert "data" not in s.get(SECRET, "team", "later-token")  # no such ServiceAccount yet
    await s.create(SA, {"metadata": {"name": "later"}}, "team")
    await TokenSecrets(s, lambda: NOT_A_SIGNER, CA.cert_pem).sync()
    assert "data" not in s.get(SECRET, "team", "later-token")  # no CA key on this peer
    await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    assert _user(_data(s.get(SECRET, "team", "later-token"))["token"], s) \
        == "system:serviceaccount:team:later"


async def test_a_token_secret_naming_another_service_account_uid_gets_no_token() -> None:
    s = await _store()
    assert SA and SECRET
    await s.create(SA, {"metadata": {"name": "robot"}}, "team")
    await s.create(SECRET, _token_secret("stale-token", "robot",
                                         annotations={NAME_ANNOTATION: "robot",
                                                      UID_ANNOTATION: "an-older-uid"}), "team")
    await TokenSecrets(s, lambda: SIGNER, CA.cert_pem).sync()
    assert "data" not in s.get(SECRET, "team", "stale-token")


@pytest.mark.slow
def test_kubectl_gets_a_token_secret_filled_and_its_token_lasts_as_long_as_the_secret(
        shoal: Any) -> None:
    import ssl
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 20
    while shoal.kubectl("get", "sa", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.3)
    shoal.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": TOKEN_SECRET,
        "metadata": {"name": "default-token", "annotations": {NAME_ANNOTATION: "default"}}}))
    while True:
        out = shoal.kubectl("get", "secret", "default-token", "-o",
                            "jsonpath={.data.token}").stdout
        if out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    token = base64.b64decode(out).decode()
    ctx = ssl.create_default_context(cafile=str(shoal.data_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False

    def code() -> int:
        req = urllib.request.Request(f"{shoal.url}/api/v1/namespaces/default/serviceaccounts",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            return int(urllib.request.urlopen(req, context=ctx, timeout=5).status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert code() == 403  # authenticated as the ServiceAccount, which may not list them
    shoal.kubectl("delete", "secret", "default-token")
    assert code() == 401
