"""GET one of a node's JSON endpoints (``/shoal/v1/...``) with a kubeconfig's credentials."""

from __future__ import annotations

import json
from typing import Any


def get_json(path: str, kubeconfig: str | None, context: str | None,
             server: str | None) -> dict[str, Any]:
    """The endpoint's JSON body; raises RuntimeError with the status for anything but 200."""
    from kubernetes import client, config  # slow to import: only for the commands that ask

    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, client_configuration=configuration)
    if server:
        configuration.host = server
    with client.ApiClient(configuration) as api:
        request = api.param_serialize("GET", path, header_params={"Accept": "application/json"},
                                      auth_settings=["BearerToken"])
        resp = api.call_api(*request)
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {resp.read().decode(errors='replace')}")
        body: dict[str, Any] = json.loads(resp.read())
        return body
