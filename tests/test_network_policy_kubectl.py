"""NetworkPolicy through real kubectl and the official Python client: created, listed with its columns, refused when bad."""

from __future__ import annotations

import json

from kubernetes import client, config

from tests.conftest import ShoalProcess

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-clients
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.5.0/24]}
    ports:
    - {port: http}
    - {port: 9000, endPort: 9010, protocol: UDP}
"""

BAD = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad}
spec:
  podSelector: {}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/24]}}]
"""


def test_kubectl_applies_lists_and_refuses_network_policies(shoal: ShoalProcess) -> None:
    shoal.kubectl("apply", "-f", "-", input=POLICY)
    got = json.loads(shoal.kubectl("get", "netpol", "web-from-clients", "-o", "json").stdout)
    # Defaulted as Kubernetes does: Ingress only (no egress rules), TCP where unsaid.
    assert got["spec"]["policyTypes"] == ["Ingress"]
    assert got["spec"]["ingress"][0]["ports"][0] == {"port": "http", "protocol": "TCP"}
    table = shoal.kubectl("get", "networkpolicies").stdout.split("\n")
    assert table[0].split() == ["NAME", "POD-SELECTOR", "AGE"]
    assert table[1].split()[:2] == ["web-from-clients", "app=web"]
    bad = shoal.kubectl("apply", "-f", "-", input=BAD, check=False)
    assert bad.returncode != 0
    assert 'spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "11.0.0.0/24": must be a ' \
           "strict subset of `cidr`" in bad.stderr
    assert "podSelector" in shoal.kubectl("explain", "networkpolicy.spec").stdout
    shoal.kubectl("delete", "netpol", "web-from-clients")
    assert "No resources found" in shoal.kubectl("get", "netpol").stderr

    # The official Python client, typed models both ways.
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal.kubeconfig), client_configuration=cfg)
    api = client.NetworkingV1Api(client.ApiClient(cfg))
    body = client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="deny-egress"),
        spec=client.V1NetworkPolicySpec(pod_selector=client.V1LabelSelector(),
                                        policy_types=["Egress"]))
    created = api.create_namespaced_network_policy("default", body)
    assert created.spec.policy_types == ["Egress"] and created.metadata.uid
    listed = api.list_namespaced_network_policy("default")
    assert [p.metadata.name for p in listed.items] == ["deny-egress"]
    api.delete_namespaced_network_policy("deny-egress", "default")
