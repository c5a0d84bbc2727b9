"""The Status body of an error names what kubectl prints: the kind for Invalid, else the resource."""

from __future__ import annotations

from shoal.api.errors import status_body
from shoal.model.kinds import KindRegistry

SERVICE = KindRegistry().by_kind("v1", "Service")
DEPLOYMENT = KindRegistry().by_kind("apps/v1", "Deployment")


def test_an_invalid_object_is_named_by_its_kind_so_kubectl_says_the_service_is_invalid() -> None:
    body = status_body(422, 'Service "dup" is invalid: spec.ports[1]: Duplicate value',
                       "Invalid", kind=SERVICE, name="dup")
    assert body["details"] == {"name": "dup", "kind": "Service"}


def test_an_invalid_object_of_a_group_keeps_its_group() -> None:
    body = status_body(422, "invalid", "Invalid", kind=DEPLOYMENT, name="web")
    assert body["details"] == {"name": "web", "group": "apps", "kind": "Deployment"}


def test_a_missing_object_is_named_by_its_resource() -> None:
    body = status_body(404, 'services "web" not found', "NotFound", kind=SERVICE, name="web")
    assert body["details"] == {"name": "web", "kind": "services"}
