"""SIGKILL one of two workers mid-epoch: the survivor fails fast saying a peer was lost,
and rerunning the same command on both workers resumes from the chief's last backup and
ends with the weights of an uninterrupted run."""

import argparse
import json
import signal
import time
import types

import pytest

from bigkeras import recipe
from bigkeras.training import TrainResult
from bigkeras.training.faults import DETECTION_BOUND_SECONDS
from tests.cluster import PYTHON, ROOT, Cluster, free_ports, load_weights, max_abs_diff, tf_config

WORKER = [PYTHON, str(ROOT / "tests" / "training_worker.py")]
EPOCHS, STEPS = 4, 4
# From the kill to the survivor's exit: detection, then unwinding the step and exiting.
EXIT_BOUND = DETECTION_BOUND_SECONDS + 15


def command(tmp_path, name, index, delay):
    return [*WORKER, "--run-dir", str(tmp_path / name), "--weights", str(tmp_path / f"{name}{index}.npz"),
            "--batch-size", "16", "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS),
            "--step-delay", str(delay)]


def run_pair(cluster, tmp_path, name, delay=0.0, tag=""):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    return [cluster.start(f"{name}{tag}{i}", command(tmp_path, name, i, delay), tf_config(addresses, i))
            for i in range(2)]


def backed_up_epoch(run_dir):
    try:
        return json.loads((run_dir / "backup" / "training_state.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_a_killed_worker_stops_the_survivor_and_a_rerun_resumes_to_the_same_weights(tmp_path):
    with Cluster(tmp_path) as cluster:
        # The same run as the reference below, slowed down; SIGKILL worker 1 in epoch 3.
        run_dir = tmp_path / "killed"
        chief, other = run_pair(cluster, tmp_path, "killed", delay=0.25, tag="-first")
        deadline = time.monotonic() + 200
        while backed_up_epoch(run_dir) < 2 and chief.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # two steps into the next epoch
        assert chief.poll() is None and other.poll() is None, cluster.log(chief)[-2000:]
        other.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        log = cluster.finish(chief, timeout=EXIT_BOUND + 30, expect_ok=False)
        detected = time.monotonic() - killed
        print(f"survivor exited {detected:.1f} s after the kill (exit {chief.returncode})")
        assert chief.returncode != 0
        assert "WorkerLostError: A peer worker was lost" in log, log[-3000:]
        assert detected < EXIT_BOUND, log[-3000:]
        resume_epoch = backed_up_epoch(run_dir)
        assert 2 <= resume_epoch < EPOCHS
        assert not (tmp_path / "killed0.npz").exists()

        # Rerun the same command on both workers: both start at the backed-up epoch. The
        # uninterrupted reference runs meanwhile.
        procs = run_pair(cluster, tmp_path, "killed", delay=0.25, tag="-again")
        references = run_pair(cluster, tmp_path, "reference")
        logs = [cluster.finish(p) for p in procs]
        for proc in references:
            cluster.finish(proc)
    for log in logs:
        assert f"Epoch {resume_epoch + 1}/{EPOCHS}" in log and "Epoch 1/" not in log, log[-2000:]
    # Only the chief wrote the run directory, before and after the failure.
    assert "not the chief" in logs[1] and "not the chief" not in logs[0]
    first_logs = [(tmp_path / f"killed-first{i}.log").read_text() for i in range(2)]
    assert "not the chief" in first_logs[1] and "not the chief" not in first_logs[0]
    assert not any(p.name.startswith("tmp-") for p in run_dir.iterdir())

    reference = load_weights(tmp_path / "reference0.npz")
    resumed = [load_weights(tmp_path / f"killed{i}.npz") for i in range(2)]
    assert max_abs_diff(resumed[0], resumed[1]) == 0
    diff = max_abs_diff(resumed[0], reference)
    print(f"resumed at epoch {resume_epoch + 1}; max abs difference from the uninterrupted run {diff:.3g}")
    assert diff <= 1e-6


def test_only_the_chief_exports_and_writes_results(tmp_path):
    args = argparse.Namespace(name="mlp", export_dir=str(tmp_path / "saved_models"), start=0.0, command="")
    result = TrainResult(model=None, history={}, run_dir=tmp_path / "run", is_chief=False)
    record = recipe.publish(args, result, types.SimpleNamespace(name="data"), metric="test_accuracy",
                            value=0.5, samples=[{"example": 1}], signatures={})
    assert "export" not in record and record["value"] == 0.5
    assert list(tmp_path.iterdir()) == []  # no run dir files, no export, no models.config


def test_peer_watch_aborts_the_collectives_after_the_retries_and_names_the_peer(monkeypatch):
    import tensorflow as tf
    from tensorflow.python.eager import context

    from bigkeras.training.faults import PeerWatch

    resolver = types.SimpleNamespace(
        task_type="worker", task_id=0, cluster_spec=lambda: tf.train.ClusterSpec({"worker": ["a:1", "b:2"]})
    )
    probes, aborts = [], []

    def probe(peer, timeout_in_ms):
        probes.append(peer)
        if len(probes) > 2:  # healthy twice, then gone
            raise tf.errors.UnavailableError(None, None, "connection refused")

    ctx = context.context()
    monkeypatch.setattr(ctx, "check_collective_ops_peer_health", probe)
    monkeypatch.setattr(ctx, "abort_collective_ops", lambda code, message: aborts.append((code, message)))
    watch = PeerWatch(types.SimpleNamespace(cluster_resolver=resolver), interval=0.01, timeout=0.01, retries=3)
    assert watch.peers == ["/job:worker/replica:0/task:1"]
    watch.start()._thread.join(timeout=10)
    assert len(probes) == 5 and watch.lost == "/job:worker/replica:0/task:1"
    assert aborts == [(tf.errors.UNAVAILABLE,
                       "bigkeras: peer /job:worker/replica:0/task:1 is lost (3 health checks failed)")]
