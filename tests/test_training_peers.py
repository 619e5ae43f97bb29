"""``TF_CONFIG`` checked with an error that names it and shows its form; workers wait for their
peers with a deadline before building anything, and name the ones that never answered."""

import contextlib
import json
import threading
import time

import pytest

from bigkeras.training import cluster_config
from bigkeras.training.cluster_config import PeersUnreachableError, TFConfigError
from tests.cluster import PYTHON, ROOT, Cluster, free_ports

FORM = r"Expected the form \{\"cluster\": \{\"worker\": \[\"host1:2222\""


@pytest.mark.parametrize("value, problem", [
    ("{bad", r"TF_CONFIG is not valid JSON"),
    ("[]", r"TF_CONFIG must be a JSON object, got list"),
    ('{"task": {"type": "worker", "index": 0}}', r'TF_CONFIG needs "cluster"'),
    ('{"cluster": {"worker": "10.0.0.1:2222"}, "task": {"type": "worker", "index": 0}}',
     r'TF_CONFIG cluster\.worker must be a non-empty list of "host:port" strings, got \'10\.0\.0\.1:2222\''),
    ('{"cluster": {"worker": ["10.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster\.worker\[0\]='10\.0\.0\.1' is not a \"host:port\" string"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker", "index": 0}}', r"is not a \"host:port\""),
    ('{"cluster": {"ps": ["a:1"], "worker": ["a:2"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster role 'ps' is not one of chief, worker, evaluator"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}}', r'TF_CONFIG needs "task"'),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}',
     r"task\.type='chief' is not a role of the cluster \(worker\)"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     r"task\.index=2 is not an index of cluster\.worker \(0 to 1\)"),
])
def test_a_malformed_tf_config_names_it_and_shows_the_form(monkeypatch, value, problem):
    from bigkeras.training.strategy import cluster_size

    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(TFConfigError, match=problem + r".*" + FORM):
        cluster_size()


def test_a_good_tf_config_and_its_chief(monkeypatch):
    from bigkeras.training.strategy import cluster_size

    config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "[::1]:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert cluster_size() == 3 and not cluster_config.is_chief_task(cluster_config.tf_config())
    assert cluster_config.peers(config) == {"chief 0": "a:1", "worker 1": "[::1]:2"}
    monkeypatch.delenv("TF_CONFIG")
    assert cluster_size() == 1 and cluster_config.is_chief_task(None)


def _config(ports, index):
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


def test_workers_that_start_apart_find_each_other(tmp_path):
    ports = free_ports(2)
    errors = []

    def worker(index, delay):
        time.sleep(delay)
        _wait_or_record(_config(ports, index), 20, errors)

    threads = [threading.Thread(target=worker, args=(0, 0.0)), threading.Thread(target=worker, args=(1, 1.5))]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and time.monotonic() - start < 10


def _fake_peer(port):
    """A listening socket on ``port`` that records what probes say, and never probes back."""
    import socket

    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    said = []

    def accept():
        while server.fileno() != -1:
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection:
                said.append(connection.recv(256))

    threading.Thread(target=accept, daemon=True).start()
    return server, said


def test_a_worker_keeps_answering_until_every_peer_has_reached_it():
    """The early worker reaches the late one first; it must not stop answering before the late one
    has reached it too (it once did: the late worker then never found it)."""
    import socket

    ports = free_ports(2)
    server, said = _fake_peer(ports[1])  # worker 1's port answers, but worker 1 has not probed yet
    errors = []
    thread = threading.Thread(target=lambda: _wait_or_record(_config(ports, 0), 20, errors))
    thread.start()
    try:
        waited = time.monotonic()
        while not said and time.monotonic() - waited < 10:
            time.sleep(0.05)
        assert said and said[0] == b"bigkeras-peer worker 0\n"  # worker 0 reached worker 1, and said who it is
        time.sleep(1.0)
        assert thread.is_alive()  # still answering: worker 1 has not reached it yet
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=2) as connection:
            connection.sendall(b"bigkeras-peer worker 1\n")
        thread.join(5)
        assert not thread.is_alive() and errors == []
    finally:
        server.close()
        thread.join(30)


def test_a_client_that_trickles_bytes_or_names_a_stranger_does_not_count_or_hold_the_port():
    """A probe connection is read for at most a second: a client sending a byte at a time does not
    keep worker 1's probe waiting, and a hello naming a worker not in TF_CONFIG counts for nothing."""
    import socket

    ports = free_ports(2)
    server, said = _fake_peer(ports[1])
    errors = []
    thread = threading.Thread(target=lambda: _wait_or_record(_config(ports, 0), 20, errors))
    thread.start()
    try:
        waited = time.monotonic()
        while not said and time.monotonic() - waited < 10:
            time.sleep(0.05)
        assert said
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=2) as stranger:
            stranger.sendall(b"bigkeras-peer worker 7\n")
        time.sleep(0.5)
        assert thread.is_alive()  # a stranger is not worker 1

        def trickle():  # one byte every half second for 10 s, unless the worker lets go first
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", ports[0]), timeout=2) as slow:
                for _ in range(20):
                    slow.sendall(b"x")
                    time.sleep(0.5)

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(0.2)  # the trickling connection is the one being read
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=2) as peer:
            peer.sendall(b"bigkeras-peer worker 1\n")
        thread.join(5)
        assert not thread.is_alive() and errors == [] and time.monotonic() - start < 3
    finally:
        server.close()
        thread.join(30)


def test_a_peer_that_answers_but_never_reaches_this_worker_is_named():
    ports = free_ports(2)
    server, _ = _fake_peer(ports[1])
    try:
        with pytest.raises(PeersUnreachableError, match=(
                rf"^worker 1 \(127\.0\.0\.1:{ports[1]}\) answered but never reached this worker \(worker 0, "
                rf"port {ports[0]}\) within 2 s\. .*BIGKERAS_PEER_DEADLINE")):
            cluster_config.wait_for_peers(_config(ports, 0), deadline=2)
    finally:
        server.close()


def _wait_or_record(config, deadline, errors):
    try:
        cluster_config.wait_for_peers(config, deadline=deadline)
    except Exception as error:  # noqa: BLE001 - reported by the test
        errors.append(error)


def test_a_peer_that_never_answers_is_named_within_the_deadline():
    ports = free_ports(3)
    start = time.monotonic()
    with pytest.raises(PeersUnreachableError, match=(
            rf"2 of the 2 other workers in TF_CONFIG never answered within 2 s: worker 1 \(127\.0\.0\.1:{ports[1]}\), "
            rf"worker 2 \(127\.0\.0\.1:{ports[2]}\)\. .*BIGKERAS_PEER_DEADLINE")):
        cluster_config.wait_for_peers(_config(ports, 0), deadline=2)
    assert 2 <= time.monotonic() - start < 4


@pytest.mark.processes
def test_a_worker_whose_peer_never_starts_stops_within_the_deadline_naming_it(tmp_path):
    ports = free_ports(2)
    deadline = 5
    cmd = [PYTHON, str(ROOT / "tests" / "training_worker.py"), "--run-dir", str(tmp_path / "run"),
           "--weights", str(tmp_path / "w.npz"), "--strategy", "multi_worker", "--epochs", "1"]
    with Cluster(tmp_path) as cluster:
        start = time.monotonic()
        worker0 = cluster.start("worker0", cmd, json.dumps(_config(ports, 0)),
                                env={"BIGKERAS_PEER_DEADLINE": str(deadline)})
        log = cluster.finish(worker0, timeout=120, expect_ok=False)
        elapsed = time.monotonic() - start
    assert worker0.returncode != 0, log[-3000:]
    assert (f"PeersUnreachableError: 1 of the 1 other workers in TF_CONFIG never answered within {deadline} s: "
            f"worker 1 (127.0.0.1:{ports[1]})") in log, log[-3000:]
    assert not (tmp_path / "run").exists()  # stopped before building anything or writing its run directory
    # The deadline, plus the interpreter and TensorFlow starting (not TensorFlow's hour).
    assert deadline <= elapsed < deadline + 60, elapsed
    print(f"worker 0 exited {elapsed:.1f} s after it started (deadline {deadline} s)")


@pytest.mark.slow  # two worker processes: about 40 s
@pytest.mark.processes
def test_workers_that_found_different_backups_stop_instead_of_training_apart(tmp_path):
    import numpy as np
    import tensorflow as tf

    from bigkeras.training import TrainConfig, train

    rng = np.random.default_rng(0)  # the settings of tests/training_worker.py, so the backups fit its runs
    x = rng.standard_normal((256, 8, 8)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, x[:, 0, :3].argmax(-1).astype("int32")))
    for name, epochs in (("a", 1), ("b", 2)):  # each worker's own (unshared) run directory
        train("mlp_tiny", data, config=TrainConfig(epochs=epochs, batch_size=16, learning_rate=1e-2, seed=0,
                                                   run_dir=str(tmp_path / name), strategy="default",
                                                   tensorboard=False, verbose=0))
    ports = free_ports(2)
    with Cluster(tmp_path) as cluster:
        workers = [cluster.start(f"worker{i}", [PYTHON, str(ROOT / "tests" / "training_worker.py"),
                                                "--run-dir", str(tmp_path / name), "--weights", str(tmp_path / f"{i}.npz"),
                                                "--strategy", "multi_worker", "--epochs", "3"],
                                 json.dumps(_config(ports, i)))
                   for i, name in enumerate("ab")]
        logs = [cluster.finish(worker, timeout=180, expect_ok=False) for worker in workers]
    for worker, log in zip(workers, logs):
        assert worker.returncode != 0, log[-3000:]
        assert "WorkersDisagreeError: The workers found different backups" in log, log[-3000:]
        assert "they would resume at epochs 2, 3" in log, log[-3000:]
    assert not (tmp_path / "0.npz").exists() and not (tmp_path / "1.npz").exists()
