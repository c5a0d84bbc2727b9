"""The test labs' network namespaces: two labs on one host never share a subnet."""

from __future__ import annotations

import pytest

from tests.tools import netns

pytestmark = pytest.mark.slow


def test_a_lab_whose_pid_picks_a_subnet_already_on_the_host_takes_the_next_free_one() -> None:
    netns.require()
    first = netns.NetnsLab()
    try:
        # Another process whose pid is equal modulo 100 (a test worker beside a bench run)
        # would start from the same subnet: it must not put a second bridge on it.
        assert netns._free_subnet(first.subnet) != first.subnet
    finally:
        first.close()
    assert netns._free_subnet(first.subnet) == first.subnet  # given back by close()
