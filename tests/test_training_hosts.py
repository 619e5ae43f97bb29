"""Two workers on two "hosts" (network namespaces with their own addresses, joined by a
veth pair) train together and end with the weights of one process at the same global batch."""

import os

import pytest

from tests.cluster import PYTHON, ROOT, Cluster, load_weights, max_abs_diff, tf_config
from tests.netns import Hosts, HostsUnavailable

WORKER = [PYTHON, str(ROOT / "tests" / "training_worker.py")]
PORT = 23456  # the namespaces are new and empty: any port is free in them
COMMON = ["--epochs", "2", "--optimizer", "adamw"]


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


@pytest.mark.slow
def test_workers_in_two_network_namespaces_match_one_process(tmp_path, hosts):
    for i in range(2):  # only the link's subnet is routed: nothing else is reachable
        routes = hosts.routes(i)
        assert "default" not in routes and routes.startswith("10.213.0.0/24"), routes
    addresses = [f"{a}:{PORT}" for a in hosts.addresses]
    with Cluster(tmp_path) as cluster:
        one = cluster.start("one", [*WORKER, *COMMON, "--run-dir", str(tmp_path / "one"),
                                    "--weights", str(tmp_path / "one.npz"),
                                    "--strategy", "one_device", "--batch-size", "32"])
        workers = [
            cluster.start(
                f"worker{i}",
                hosts.wrap(i, [*WORKER, *COMMON, "--run-dir", str(tmp_path / "run"),
                               "--weights", str(tmp_path / f"w{i}.npz"), "--batch-size", "16"]),
                tf_config(addresses, i),
            )
            for i in range(2)
        ]
        logs = [cluster.finish(p) for p in workers]
        cluster.finish(one)
    for log in logs:
        assert "Epoch 2/2" in log
    assert "not the chief" in logs[1] and "not the chief" not in logs[0]
    reference = load_weights(tmp_path / "one.npz")
    w0, w1 = load_weights(tmp_path / "w0.npz"), load_weights(tmp_path / "w1.npz")
    assert max_abs_diff(w0, w1) == 0
    diff = max_abs_diff(w0, reference)
    print(f"two namespaced workers vs one process: max abs weight difference {diff:.3g}")
    assert diff <= 1e-5
