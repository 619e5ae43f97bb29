"""Multi-replica and multi-worker training give the weights one replica would.

Logical CPU devices and TF_CONFIG must be set before TensorFlow starts, so every run here
is a fresh process (``tests/training_worker.py``) and the tests compare saved weights.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.cluster import PYTHON, free_ports, load_weights, tf_config

ROOT = Path(__file__).resolve().parents[1]
WORKER = [PYTHON, str(ROOT / "tests" / "training_worker.py")]
TIMEOUT = 300  # seconds: a hung collective fails the test instead of the suite


def start(args, tmp_path, name, env=None):
    log = open(tmp_path / f"{name}.log", "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([*WORKER, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def finish(proc, tmp_path, name):
    try:
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
    log = (tmp_path / f"{name}.log").read_text()
    assert rc == 0, f"{name} failed:\n{log[-3000:]}"
    return log


def assert_same_weights(a, b, atol):
    assert len(a) == len(b)
    for wa, wb in zip(a, b):
        assert np.isfinite(wa).all() and np.isfinite(wb).all()
        np.testing.assert_allclose(wa, wb, atol=atol, rtol=0)


def test_two_cpu_replicas_match_one_replica_at_the_same_global_batch(tmp_path):
    common = ["--epochs", "2", "--steps-per-epoch", "4", "--optimizer", "adamw"]
    one = start([*common, "--run-dir", str(tmp_path / "one"), "--weights", str(tmp_path / "one.npz"),
                 "--strategy", "one_device", "--batch-size", "32"], tmp_path, "one")
    two = start([*common, "--run-dir", str(tmp_path / "two"), "--weights", str(tmp_path / "two.npz"),
                 "--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "16"], tmp_path, "two")
    finish(one, tmp_path, "one")
    finish(two, tmp_path, "two")
    a, b = load_weights(tmp_path / "one.npz"), load_weights(tmp_path / "two.npz")
    assert_same_weights(a, b, atol=1e-5)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["model"] == "mlp_tiny" and config["train"]["cpu_replicas"] == 2
    history = (tmp_path / "two" / "history.csv").read_text().splitlines()
    assert len(history) == 3, history  # header + one row per epoch


@pytest.mark.slow
@pytest.mark.processes
def test_two_workers_with_batch_norm_dropout_and_precise_bn_match_two_replicas_and_only_the_chief_writes(tmp_path):
    """Two worker processes train together; only the chief writes.

    Per-replica batch statistics and dropout masks: the one-process run to match splits each
    global batch the same way (two replicas of 16). PreciseBN re-estimates before each validation
    on every worker, so the validation scores (what best.keras is chosen by) match too."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run_dir = tmp_path / "run"
    common = ["--batch-size", "16", "--epochs", "2", "--precise-bn", "3",
              "--model-kwargs", json.dumps({"batch_norm": True, "dropout": 0.2})]
    procs = [start([*common, "--run-dir", str(tmp_path / "one"), "--weights", str(tmp_path / "one.npz"),
                    "--history", str(tmp_path / "one.json"), "--strategy", "mirrored", "--cpu-replicas", "2"],
                   tmp_path, "one")]
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        procs.append(start([*common, "--run-dir", str(run_dir), "--weights", str(tmp_path / f"w{index}.npz"),
                            "--history", str(tmp_path / f"w{index}.json")],
                           tmp_path, f"worker{index}", {"TF_CONFIG": tf_config(addresses, index), "TMPDIR": str(scratch)}))
    logs = [finish(proc, tmp_path, name) for proc, name in zip(procs, ["one", "worker0", "worker1"])]

    # The chief wrote the run directory; worker 1 wrote into a temporary one, now gone.
    assert {"config.json", "history.csv", "curves.png", "last.keras", "best.keras", "backup"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert not any(p.name.startswith("tmp-") for p in run_dir.iterdir())
    found = re.findall(r"not the chief: writing to (\S+),", logs[2])
    assert len(found) == 1 and found[0].startswith(str(tmp_path / "tmp1")), logs[2][-2000:]
    assert not Path(found[0]).exists()
    assert "not the chief" not in logs[1]
    assert list((tmp_path / "tmp1").iterdir()) == []

    one, w0, w1 = (load_weights(tmp_path / f"{n}.npz") for n in ("one", "w0", "w1"))
    assert_same_weights(w0, w1, atol=0)  # PreciseBN gives every worker the same statistics
    assert_same_weights(one, w0, atol=1e-6)
    histories = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "w0")]
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[0][key], histories[1][key], rtol=1e-6)
