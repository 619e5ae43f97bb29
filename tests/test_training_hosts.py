"""The test hosts: network namespaces with their own addresses, joined by a veth pair
(``tests/netns.py``). tests/test_recipes_hosts.py trains recipes on two of them."""

import os

import pytest

from tests.netns import Hosts, HostsUnavailable


@pytest.fixture
def hosts():
    try:
        made = Hosts.create()
    except HostsUnavailable as err:
        pytest.skip(f"cannot make test hosts: {err}")
    try:
        yield made
    finally:
        made.destroy()


def test_without_root_there_are_no_hosts_and_the_reason_says_so(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostsUnavailable, match="need root.*uid 1000"):
        Hosts.create()
