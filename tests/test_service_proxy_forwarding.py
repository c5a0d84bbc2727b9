"""The service proxy turns IPv4 forwarding on where it runs, as k3s's agent does: a node
port or cluster IP DNATed to an endpoint on another node is forwarded, whatever the
host (or the namespace it inherited from) had set before."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.net.service_proxy import ProxySettings, ServiceProxy
from shoal.store.replica import Replica


def proxy(path: Path | None) -> ServiceProxy:
    return ServiceProxy(Replica(None, "n1"), "n1", ProxySettings(forwarding=path))


def test_forwarding_off_is_turned_on(tmp_path: Path) -> None:
    knob = tmp_path / "ip_forward"
    knob.write_text("0\n")
    proxy(knob).enable_forwarding()
    assert knob.read_text().strip() == "1"


def test_a_knob_that_cannot_be_written_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    proxy(tmp_path / "missing" / "ip_forward").enable_forwarding()
    assert "could not turn IPv4 forwarding on" in caplog.text

