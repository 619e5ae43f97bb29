"""A run killed with SIGKILL and restarted with the same command continues where it stopped
and ends with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def command(run_dir, weights, history, delay=0.0):
    return [
        sys.executable, str(ROOT / "tests" / "training_worker.py"),
        "--run-dir", str(run_dir), "--weights", str(weights), "--history", str(history),
        "--strategy", "default", "--batch-size", "16", "--epochs", "5", "--steps-per-epoch", "4",
        "--step-delay", str(delay),
    ]


def run(cmd, log):
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=TIMEOUT, cwd=ROOT,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return Path(log).read_text()


def backed_up_epoch(run_dir):
    try:
        return json.loads((run_dir / "backup" / "training_state.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_sigkill_after_the_second_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    run(command(reference, tmp_path / "ref.npz", tmp_path / "ref.json"), tmp_path / "ref.log")

    # The same run, slowed down so the kill lands mid-run; SIGKILL once the second epoch
    # backup is on disk.
    run_dir = tmp_path / "killed"
    cmd = command(run_dir, tmp_path / "resumed.npz", tmp_path / "resumed.json", delay=0.25)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + TIMEOUT
        while backed_up_epoch(run_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    killed_at = backed_up_epoch(run_dir)
    assert 2 <= killed_at < 5
    assert not (tmp_path / "resumed.npz").exists()

    # Restart with the same command: it starts at the backed-up epoch, not at epoch 0.
    log = run(cmd, tmp_path / "second.log")
    assert f"Epoch {killed_at + 1}/5" in log and "Epoch 1/5" not in log, log[-2000:]

    history = json.loads((tmp_path / "resumed.json").read_text())
    reference_history = json.loads((tmp_path / "ref.json").read_text())
    assert len(history["loss"]) == 5
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=1e-5)
    for got, want in zip(weights(tmp_path / "resumed.npz"), weights(tmp_path / "ref.npz")):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
