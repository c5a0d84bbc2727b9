"""What authorization costs.

- ``authorize_us``: ``Authorizer.authorize`` per call, in process, on a replica holding
  the default policy, 20 namespaces each with a RoleBinding to ``edit``, 10 nodes and 200
  pods (each mounting a Secret): as the admin (system:masters), as an ``edit`` user in
  its namespace (allowed, and refused elsewhere), and as a node (its own Node, a Secret a
  pod bound to it mounts, and one it does not). Also what a rebuild of the RBAC index
  costs, and a call after an unrelated write (the index checks the RBAC objects'
  resourceVersions instead of trusting the revision).
- ``end_to_end``: one real node, ``wrk`` (16 connections) creating pods and getting one
  pod, as the admin (its bearer token: no RBAC) and as a ServiceAccount bound to ``edit``
  in the namespace (its token: JWT verification and RBAC), in the same run, each twice in
  alternation; the ratio is user / admin.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.api_single_node import CREATE_LUA, Node, _any_pod, _wrk
from shoal.authz.attributes import Attributes
from shoal.authz.authorizer import Authorizer
from shoal.authz.user import authenticated, node_user
from shoal.control.rbac_bootstrap import RbacBootstrap
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

RBAC = "rbac.authorization.k8s.io"


async def _populated() -> ObjectStore:
    reg = KindRegistry()
    store = ObjectStore(Replica(None, "bench"), reg)

    def kind(api_version: str, name: str) -> Any:
        k = reg.by_kind(api_version, name)
        assert k is not None
        return k

    await RbacBootstrap(store).ensure_policy()
    for i in range(20):
        ns = f"team-{i:02d}"
        await store.create(kind("v1", "Namespace"), {"metadata": {"name": ns}})
        await store.create(kind(f"{RBAC}/v1", "RoleBinding"), {
            "metadata": {"name": "edit"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": f"{ns}-devs"}]}, ns)
        for j in range(10):
            await store.create(kind("v1", "Pod"), {
                "metadata": {"name": f"p{j}"},
                "spec": {"nodeName": f"node-{j}", "containers": [{"name": "c", "image": "i"}],
                         "volumes": [{"name": "s", "secret": {"secretName": f"s{j}"}}]}}, ns)
    return store


def _per_call_us(authz: Authorizer, attrs: Attributes, expect: bool, n: int) -> float:
    assert authz.authorize(attrs).allowed is expect, attrs
    t0 = time.perf_counter()
    for _ in range(n):
        authz.authorize(attrs)
    return round((time.perf_counter() - t0) / n * 1e6, 2)


async def _authorize_figures(quick: bool) -> dict[str, Any]:
    store = await _populated()
    authz = Authorizer(store.replica)
    n = 20_000 if quick else 100_000
    admin = authenticated("admin", ("system:masters",))
    dev = authenticated("dana", ("team-07-devs",))
    node = node_user("node-3")

    def ask(user: Any, verb: str, resource: str, ns: str = "", name: str = "",
            sub: str = "") -> Attributes:
        return Attributes(user, verb, True, "", "v1", resource, sub, ns, name)

    figures = {
        "admin_get_pod": _per_call_us(authz, ask(admin, "get", "pods", "team-07", "p1"), True, n),
        "edit_user_create_pod": _per_call_us(authz, ask(dev, "create", "pods", "team-07"), True,
                                             n),
        "edit_user_get_pod": _per_call_us(authz, ask(dev, "get", "pods", "team-07", "p1"), True,
                                          n),
        "edit_user_refused_elsewhere": _per_call_us(
            authz, ask(dev, "get", "pods", "team-08", "p1"), False, n),
        "node_get_own_node": _per_call_us(authz, ask(node, "get", "nodes", "", "node-3"), True,
                                          n),
        "node_get_mounted_secret_10_pods_in_ns": _per_call_us(
            authz, ask(node, "get", "secrets", "team-07", "s3"), True, n // 10),
        "node_refused_other_secret": _per_call_us(
            authz, ask(node, "get", "secrets", "team-07", "s4"), False, n // 10),
        "node_pod_status_bound": _per_call_us(
            authz, ask(node, "update", "pods", "team-07", "p3", "status"), True, n),
    }
    # An unrelated write moves the revision: the next call compares RBAC resourceVersions.
    cm = store.registry.by_kind("v1", "ConfigMap")
    assert cm is not None
    attrs = ask(dev, "get", "pods", "team-07", "p1")
    rounds = 200 if quick else 1000
    spent = 0.0
    for i in range(rounds):
        await store.create(cm, {"metadata": {"name": f"c{i}"}}, "team-00")
        t0 = time.perf_counter()
        authz.authorize(attrs)
        spent += time.perf_counter() - t0
    figures["edit_user_after_an_unrelated_write"] = round(spent / rounds * 1e6, 2)
    t0 = time.perf_counter()
    for _ in range(rounds):
        authz.invalidate()
        authz.authorize(attrs)
    figures["rebuild_then_authorize"] = round((time.perf_counter() - t0) / rounds * 1e6, 2)
    store.replica.close()
    return {"us_per_call": figures, "calls": n,
            "cluster": {"namespaces": 20, "rolebindings": 20, "pods": 200, "nodes": 10,
                        "clusterroles": len(store.replica.list(f"clusterroles.{RBAC}"))}}


@dataclass
class _As:
    """What ``_wrk`` needs of a node, with another bearer token."""

    work: Path
    url: str
    token: str


async def _account_tokens(node: Node, namespace: str) -> tuple[str, str]:
    """Tokens of two ServiceAccounts: one bound to ``edit`` in ``namespace``, one bound to
    ``cluster-admin`` by a ClusterRoleBinding (the same authentication, RBAC's shortest
    path)."""
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    headers = {"Authorization": f"Bearer {node.token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with s.post(node.url + path, json=body, ssl=ctx) as r:
                assert r.status in (200, 201), (path, r.status, await r.text())
                return dict(await r.json())

        for _ in range(100):  # the default policy is written by a controller at start
            async with s.get(f"{node.url}/apis/{RBAC}/v1/clusterroles/edit", ssl=ctx) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
        await post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        tokens = []
        for account, kind, role in (("editor", "RoleBinding", "edit"),
                                    ("operator", "ClusterRoleBinding", "cluster-admin")):
            await post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                       {"metadata": {"name": account}})
            where = f"namespaces/{namespace}/rolebindings" if kind == "RoleBinding" \
                else "clusterrolebindings"
            await post(f"/apis/{RBAC}/v1/{where}", {
                "metadata": {"name": account},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account,
                              "namespace": namespace}]})
            review = await post(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": {"expirationSeconds": 7200}})
            tokens.append(str(review["status"]["token"]))
        return tokens[0], tokens[1]


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "raw"}


def _end_to_end(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (Debian package wrk)")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-authz-"))
    node = Node(work)
    node.start()
    seconds = 3 if quick else 8
    ns = "rbac-perf"  # not "bench-...": the script's pod names are rewritten from "bench-"
    try:
        edit_token, operator_token = asyncio.run(_account_tokens(node, ns))
        creds = {"admin": _As(work, node.url, node.token),
                 "edit_user": _As(work, node.url, edit_token),
                 "cluster_admin_account": _As(work, node.url, operator_token)}
        # Alternated, so that a store that grows or a busy machine weighs on each alike.
        order = [*creds, *reversed(creds)]
        creates: dict[str, list[dict[str, Any]]] = {who: [] for who in creds}
        gets: dict[str, list[dict[str, Any]]] = {who: [] for who in creds}
        for i, who in enumerate(order):
            script = CREATE_LUA.replace("/namespaces/default/", f"/namespaces/{ns}/").replace(
                "bench-", f"run{i}-")
            creates[who].append(_figures(_wrk(creds[who], f"/api/v1/namespaces/{ns}/pods",  # type: ignore[arg-type]
                                              seconds, 16, 2, script)))
        target = f"/api/v1/namespaces/{ns}/pods/{asyncio.run(_any_pod(node, ns))}"
        for who in order:
            gets[who].append(_figures(_wrk(creds[who], target, seconds, 16, 2)))  # type: ignore[arg-type]
        failed = [r for table in (creates, gets) for rs in table.values() for r in rs
                  if r["non_2xx"]]
        if failed:
            raise RuntimeError(f"requests failed: {failed}")

        def mean_rps(rs: list[dict[str, Any]]) -> float:
            return round(float(sum(r["requests_per_s"] for r in rs)) / len(rs), 1)

        result: dict[str, Any] = {"seconds_per_run": seconds, "connections": 16}
        for label, table in (("create", creates), ("get", gets)):
            per_s = {who: mean_rps(rs) for who, rs in table.items()}
            admin, user, account = (per_s["admin"], per_s["edit_user"],
                                    per_s["cluster_admin_account"])
            result[label] = {
                **{f"{who}_per_s": v for who, v in per_s.items()},
                # what a person with edit gets, against the admin token
                "ratio_user_over_admin": round(user / admin, 3),
                # the same token authentication on both sides: RBAC's share
                "ratio_user_over_cluster_admin_account": round(user / account, 3),
                # ServiceAccount token verification and RBAC against the admin token
                "ratio_cluster_admin_account_over_admin": round(account / admin, 3),
                "runs": table}
        return result
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"authorize": asyncio.run(_authorize_figures(quick))}
    result["end_to_end"] = _end_to_end(quick)
    return result


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    print(json.dumps(out, indent=2))
