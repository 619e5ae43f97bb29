"""A run killed with SIGKILL and restarted with the same command continues where it stopped
and ends with the weights of an uninterrupted run; a kill between a backup's files loses
nothing; a resume onto another model or other settings, and a second run in the same run
directory, stop with a message that says what to do."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bigkeras.training import TrainConfig, runs, train
from tests.cluster import PYTHON

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def command(run_dir, weights, history, delay=0.0, python=PYTHON):
    return [
        python, str(ROOT / "tests" / "training_worker.py"),
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
@pytest.mark.processes  # kills its training process mid-run: one at a time with the others (tests/conftest.py)
def test_sigkill_after_the_second_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    run(command(reference, tmp_path / "ref.npz", tmp_path / "ref.json"), tmp_path / "ref.log")

    # The same run, slowed down so the kill lands mid-run; SIGKILL once the second epoch
    # backup is on disk.
    run_dir = tmp_path / "killed"
    cmd = command(run_dir, tmp_path / "resumed.npz", tmp_path / "resumed.json", delay=0.25)
    with open(tmp_path / "first.log", "w") as log:  # the interpreter itself: the SIGKILL lands on the trainer
        proc = subprocess.Popen([sys.executable, *cmd[1:]], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
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


# Backups as one unit, fingerprints, the lock (in this process: small runs of mlp_tiny)
# ---------------------------------------------------------------------------------------
def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x[:, 0, :3].argmax(-1).astype("int32")))


def small(run_dir, **overrides):
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "steps_per_epoch": 2, "run_dir": str(run_dir),
                          "strategy": "default", "tensorboard": False, "verbose": 0, "deterministic": True,
                          "learning_rate": 1e-2, **overrides})


def backup_weights(run_dir):
    from bigkeras import build

    model = build("mlp_tiny")
    model.load_weights(run_dir / "backup" / runs.BACKUP_WEIGHTS)
    return [np.asarray(w) for w in model.get_weights()]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even ``except Exception`` blocks)."""


def test_a_kill_between_the_backups_files_resumes_from_the_whole_previous_backup(tmp_path, monkeypatch):
    reference = train("mlp_tiny", data(), config=small(tmp_path / "reference"))

    run_dir = tmp_path / "killed"
    write_atomic, states = runs.write_atomic, []

    def second_write_dies(path, text):  # the state file is the second write of each backup
        if path.endswith(runs.BACKUP_STATE):
            states.append(path)
            if len(states) == 2:  # epoch 2's backup: its weights are on disk, its state never is
                raise Killed()
        write_atomic(path, text)

    monkeypatch.setattr(runs, "write_atomic", second_write_dies)
    with pytest.raises(Killed):
        train("mlp_tiny", data(), config=small(run_dir))
    monkeypatch.undo()
    # The backup is still epoch 1's, whole: its epoch and its weights go together.
    assert runs.read_state(str(run_dir / "backup"))["epoch"] == 1
    assert sorted(p.name for p in (run_dir / "backup").iterdir()) == [runs.BACKUP_WEIGHTS, runs.BACKUP_STATE]
    epoch1 = backup_weights(run_dir)
    # A real kill also leaves the half-written directory behind: the resume ignores it.
    (run_dir / ".tmp-999-deadbeef-backup").mkdir()
    (run_dir / ".tmp-999-deadbeef-backup" / runs.BACKUP_WEIGHTS).write_bytes(b"half")

    resumed = train("mlp_tiny", data(), config=small(run_dir))
    assert len(resumed.history["loss"]) == 3
    np.testing.assert_allclose(resumed.history["loss"], reference.history["loss"], rtol=1e-5)
    for got, want in zip(resumed.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert any(not np.array_equal(a, b) for a, b in zip(epoch1, resumed.model.get_weights()))


def test_a_kill_between_the_two_renames_finds_the_backup_moved_aside(tmp_path):
    train("mlp_tiny", data(), config=small(tmp_path, epochs=1))
    backup = tmp_path / "backup"
    backup.rename(tmp_path / "backup.old-1a2b3c4d")  # _swap_in's first rename done, its second not
    assert runs.read_state(str(backup))["epoch"] == 1
    resumed = train("mlp_tiny", data(), config=small(tmp_path, epochs=2))
    assert len(resumed.history["loss"]) == 2 and runs.read_state(str(backup))["epoch"] == 2


def test_a_resume_with_another_model_or_settings_stops_with_how_to_start_fresh(tmp_path):
    train("mlp_tiny", data(), config=small(tmp_path, epochs=1))
    with pytest.raises(runs.ResumeMismatchError, match=(
            r"Cannot resume from the backup in .*backup: it belongs to a different run \(model: the backup's is a "
            r"Functional with 4 weights, 1,091 numbers, this run's a Functional with 4 weights, 2,179 numbers\)\. "
            r"To start fresh, pass TrainConfig\(resume=False\) \(a recipe: leave out --resume\), or choose another "
            r"run_dir")):
        train("mlp_tiny", data(), config=small(tmp_path), model_kwargs={"hidden_units": (32,)})
    with pytest.raises(runs.ResumeMismatchError, match=r"optimizer: the backup's 'adamw', this run's 'sgd'; "
                                                       r"learning_rate: the backup's 0\.01, this run's 0\.1\)"):
        train("mlp_tiny", data(), config=small(tmp_path, learning_rate=0.1, optimizer="sgd"))
    assert runs.read_state(str(tmp_path / "backup"))["epoch"] == 1  # the refused runs changed nothing
    # More epochs is a resume, not another run; resume=False starts the other model fresh.
    assert len(train("mlp_tiny", data(), config=small(tmp_path, epochs=2)).history["loss"]) == 2
    fresh = train("mlp_tiny", data(), config=small(tmp_path, epochs=1, resume=False),
                  model_kwargs={"hidden_units": (32,)})
    assert len(fresh.history["loss"]) == 1


@pytest.mark.processes
def test_a_second_run_in_the_same_run_dir_stops_at_once(tmp_path):
    run_dir = tmp_path / "run"
    # The interpreter itself: the error names the lock holder's pid, proc.pid.
    first = command(run_dir, tmp_path / "first.npz", tmp_path / "first.json", delay=0.5, python=sys.executable)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(first, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + TIMEOUT
        lock = run_dir / runs.LOCK_FILE
        while not (lock.exists() and lock.read_text().startswith("pid")) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.1)
        start = time.monotonic()
        with pytest.raises(runs.RunDirBusyError, match=rf"run_dir {run_dir} is in use by another run \(pid "
                                                       rf"{proc.pid} on .*\)\. .*choose another run_dir"):
            train("mlp_tiny", data(), config=small(run_dir))
        assert time.monotonic() - start < 1.0  # before anything was built
        assert proc.poll() is None  # the first run goes on
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Its lock went with its process: the directory is free again.
    assert len(train("mlp_tiny", data(), config=small(run_dir, epochs=1, resume=False)).history["loss"]) == 1


def test_history_and_config_are_replaced_whole_and_a_cut_row_is_dropped(tmp_path):
    from bigkeras.training.callbacks import HistoryLog

    train("mlp_tiny", data(), config=small(tmp_path, epochs=2))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no temporary left over
    text = (tmp_path / "history.csv").read_text()
    (tmp_path / "history.csv").write_text(text + "2,0.5")  # an older version's cut write
    with pytest.warns(UserWarning, match=r"history\.csv: line 4 is not a whole history row; dropped"):
        rows = HistoryLog(str(tmp_path), initial_epoch=3).rows
    assert [row["epoch"] for row in rows] == [0, 1]
