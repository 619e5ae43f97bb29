"""A run directory that survives kills and refuses mix-ups: one-unit backups, atomic files, a lock.

- **Backups as one unit.** ``write_backup`` writes the weights (model and optimizer) and
  ``training_state.json`` (the epoch to resume at and the run's fingerprint) into a new
  temporary directory, then renames it into place as ``backup/``; a kill at any point
  leaves either the old backup or the new one, never new weights with an old epoch.
  (Two renames swap a directory for another; ``read_backup`` finds the old one if a kill
  falls between them.)
- **Fingerprints.** A backup records the structure of the model it came from and the
  training settings that give its state a meaning (``MUST_MATCH``); ``read_backup`` refuses
  a backup of another model or settings with ``ResumeMismatchError``, which says how to
  start fresh. Settings a rerun may change (``epochs`` to extend a run, ``verbose``,
  ``strategy``...) are left out.
- **Atomic small files.** ``write_atomic`` writes ``config.json`` and ``history.csv`` to a
  temporary file of a unique name and renames it over the old one.
- **A lock.** ``run_lock`` holds an exclusive ``flock`` on ``run_dir/.lock`` while a run
  trains; a second run in that directory stops at once with ``RunDirBusyError``. The
  operating system releases the lock when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import uuid

import numpy as np

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_STATE = "training_state.json"  # written last: a backup directory without it is incomplete
LOCK_FILE = ".lock"
# TrainConfig fields a backup's state depends on: a resume with any of them changed is refused.
MUST_MATCH = ("batch_size", "steps_per_epoch", "optimizer", "learning_rate", "weight_decay", "momentum", "schedule",
              "warmup_steps", "step_boundaries", "step_gamma", "clipnorm", "grad_accum_steps", "mixed_precision",
              "seed", "lora_rank", "lora_alpha", "lora_targets")  # fmt: skip


class ResumeMismatchError(ValueError):
    """The run directory's backup belongs to another model or other training settings."""


class RunDirBusyError(RuntimeError):
    """Another run holds the run directory's lock."""


# Files
# ---------------------------------------------------------------------------------------
def temporary_name(path: str) -> str:
    """A unique sibling of ``path`` that keeps its suffix (Keras checks ``.keras``, ``.weights.h5``)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


def save_atomic(save, path: str) -> None:
    """Call ``save(tmp_path)`` then move the result over ``path`` in one rename."""
    tmp = temporary_name(path)
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    save_atomic(write, path)


# Fingerprints
# ---------------------------------------------------------------------------------------
def fingerprint(model, config) -> dict:
    """What a backup must agree with to be resumed: the model's structure and ``MUST_MATCH``.

    The model part is a hash of its class and every weight's shape and dtype, in order (not
    the layer names, which Keras numbers by construction order within a process).

    Args:
        model: the compiled ``keras.Model``.
        config: the ``TrainConfig``.
    """
    structure = [type(model).__name__, *[[list(v.shape), str(v.dtype)] for v in model.weights]]
    digest = hashlib.sha256(json.dumps(structure).encode()).hexdigest()[:16]
    parameters = sum(math.prod(v.shape) for v in model.weights)
    settings = {field: getattr(config, field) for field in MUST_MATCH}
    return {
        "model": digest,
        "model_summary": f"{type(model).__name__} with {len(model.weights)} weights, {parameters:,} numbers",
        "train": json.loads(json.dumps(settings, default=list)),  # tuples as JSON lists
    }


def _differences(found: dict, expected: dict) -> list[str]:
    differences = []
    if found.get("model") != expected["model"]:
        differences.append(f"model: the backup's is a {found.get('model_summary', 'different model')}, "
                           f"this run's a {expected['model_summary']}")  # fmt: skip
    theirs = found.get("train", {})
    differences += [f"{field}: the backup's {theirs.get(field)!r}, this run's {value!r}"
                    for field, value in expected["train"].items() if theirs.get(field) != value]  # fmt: skip
    return differences


# Backups
# ---------------------------------------------------------------------------------------
def write_backup(model, backup_dir: str, *, epoch: int, fingerprint: dict) -> None:
    """Replace the backup in ``backup_dir`` with ``model``'s weights and ``epoch``, as one unit.

    Args:
        model: the model (its optimizer state is saved with it).
        backup_dir: the run's ``backup/`` directory.
        epoch: the epoch a resumed run starts at.
        fingerprint: ``fingerprint(model, config)``.
    """
    parent = os.path.dirname(os.path.abspath(backup_dir))
    os.makedirs(parent, exist_ok=True)
    new = temporary_name(os.path.abspath(backup_dir))
    os.makedirs(new)
    try:
        model.save_weights(os.path.join(new, BACKUP_WEIGHTS))
        state = json.dumps({"epoch": int(epoch), "fingerprint": fingerprint, "written": time.time(),
                            "random_state": [v.numpy().tolist() for v in _random_states(model)]})
        write_atomic(os.path.join(new, BACKUP_STATE), state)
        _swap_in(new, backup_dir)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def _swap_in(new: str, backup_dir: str) -> None:
    """Rename ``new`` to ``backup_dir``, moving an existing backup aside first."""
    old = None
    if os.path.isdir(backup_dir):
        old = backup_dir.rstrip(os.sep) + f".old-{uuid.uuid4().hex[:8]}"
        os.rename(backup_dir, old)
    os.rename(new, backup_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _complete_backup(backup_dir: str) -> str | None:
    """``backup_dir`` if it holds a whole backup, else the newest whole one a kill between the
    two renames of ``_swap_in`` left beside it; None when there is none."""
    if os.path.isfile(os.path.join(backup_dir, BACKUP_STATE)):
        return backup_dir
    parent, name = os.path.split(os.path.abspath(backup_dir))
    if not os.path.isdir(parent):
        return None
    aside = [os.path.join(parent, entry) for entry in os.listdir(parent) if entry.startswith(name + ".old-")]
    whole = [path for path in aside if os.path.isfile(os.path.join(path, BACKUP_STATE))]
    return max(whole, key=os.path.getmtime) if whole else None


def read_state(backup_dir: str) -> dict | None:
    """The ``training_state.json`` of the whole backup in ``backup_dir`` (None without one)."""
    found = _complete_backup(backup_dir)
    if found is None:
        return None
    with open(os.path.join(found, BACKUP_STATE)) as f:
        return {**json.load(f), "directory": found}


def read_backup(model, backup_dir: str, *, fingerprint: dict, run_dir: str) -> int:
    """Load the backup in ``backup_dir`` into ``model`` and its optimizer, once it matches.

    Returns:
        The epoch to resume at (0 without a backup).

    Raises:
        ResumeMismatchError: the backup is of another model or other ``MUST_MATCH`` settings;
            it lists what differs and how to start fresh. Nothing is loaded.
    """
    try:
        state = read_state(backup_dir)
    except (OSError, ValueError) as error:
        raise ResumeMismatchError(f"Cannot resume: {backup_dir}/{BACKUP_STATE} is unreadable ({error}). "
                                  + _start_fresh(run_dir)) from None  # fmt: skip
    if state is None:
        return 0
    differences = _differences(state.get("fingerprint") or {}, fingerprint)
    if differences:
        raise ResumeMismatchError(
            f"Cannot resume from the backup in {backup_dir}: it belongs to a different run ("
            + "; ".join(differences) + "). " + _start_fresh(run_dir)
        )
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(state["directory"], BACKUP_WEIGHTS))
    saved = state.get("random_state")  # absent from backups written before it was kept
    variables = _random_states(model)
    if saved is not None and len(saved) == len(variables):
        for variable, value in zip(variables, saved):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return int(state["epoch"])


def _random_states(model) -> list:
    """The states of the model's seed generators (dropout...): ``save_weights`` leaves them out,
    and a resumed run that restarted them would draw other dropout masks than the run it continues."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _start_fresh(run_dir: str) -> str:
    return (f"To start fresh, pass TrainConfig(resume=False) (a recipe: leave out --resume), or choose another "
            f"run_dir; to keep that run, move {run_dir} away first.")  # fmt: skip


# The lock
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def run_lock(run_dir: str):
    """Hold the run directory's lock while the block runs; a second holder stops at once.

    Raises:
        RunDirBusyError: another process (or another run in this one) holds it; the message
            names its process id and when it started.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_FILE)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirBusyError(
                f"run_dir {run_dir} is in use by another run ({holder}). Two runs in one directory would "
                "overwrite each other's backups and checkpoints: wait for it to finish, or choose another run_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
