"""The harness's callbacks: fault-tolerant backups, finite-only checkpoints, history and plots.

Keras' own ``BackupAndRestore`` and ``ModelCheckpoint`` save whatever the weights are; after
a NaN step (``TerminateOnNaN`` stops at the end of that step, and the epoch still ends) they
would overwrite good checkpoints with NaN weights. These save only finite weights, write
atomically (a kill mid-write leaves the previous file), and write where ``train()`` tells
them, which on non-chief workers is a temporary directory.
"""

from __future__ import annotations

import csv
import json
import math
import os

import keras
import numpy as np

from bigkeras.training.plots import plot_history

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_STATE = "training_state.json"


def weights_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` (and of its optimizer) is finite."""
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in variables if _is_float(v))


def _is_float(v) -> bool:
    return "float" in keras.backend.standardize_dtype(v.dtype)


def _logs_finite(logs) -> bool:
    return all(math.isfinite(float(v)) for v in (logs or {}).values() if np.ndim(v) == 0)


def _atomic(save, path: str) -> None:
    """Call ``save(tmp_path)`` then move the result over ``path`` in one rename."""
    # Keep the suffix: Keras checks for ".keras" and ".weights.h5".
    tmp = os.path.join(os.path.dirname(path), "tmp-" + os.path.basename(path))
    save(tmp)
    os.replace(tmp, path)


def restore_backup(model: keras.Model, backup_dir: str) -> int:
    """Load the backup in ``backup_dir`` into ``model`` and its optimizer.

    Returns:
        int, the epoch to resume from (0 when there is no backup).
    """
    state_path = os.path.join(backup_dir, BACKUP_STATE)
    if not os.path.exists(state_path):
        return 0
    with open(state_path) as f:
        state = json.load(f)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(backup_dir, BACKUP_WEIGHTS))
    return int(state["epoch"])


class FaultTolerance(keras.callbacks.Callback):
    """Back up model and optimizer state every epoch or every ``save_freq`` steps.

    The counterpart of ``keras.callbacks.BackupAndRestore``; ``train()`` restores with
    ``restore_backup`` before training and passes the epoch on as ``initial_epoch``. A
    mid-epoch backup records the epoch it was taken in, so a resumed run replays that
    epoch from its first batch with the backed-up weights (Keras 3's semantics); epoch
    backups resume exactly.

    Args:
        backup_dir: str, where ``latest.weights.h5`` and ``training_state.json`` go.
        save_freq: ``"epoch"`` or int, back up every this many steps.
    """

    def __init__(self, backup_dir: str, save_freq="epoch"):
        super().__init__()
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        self._epoch = 0
        self._steps_since_save = 0
        self._last_batch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # With steps_per_execution > 1, `batch` jumps by several steps per call.
        self._steps_since_save += batch - self._last_batch
        self._last_batch = batch
        if self._steps_since_save >= self.save_freq:
            self._steps_since_save = 0
            self._save(self._epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, logs)

    def _save(self, resume_epoch: int, logs) -> None:
        if not _logs_finite(logs) or not weights_finite(self.model):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        _atomic(self.model.save_weights, os.path.join(self.backup_dir, BACKUP_WEIGHTS))
        state = json.dumps({"epoch": resume_epoch})
        _atomic(lambda p: _write(p, state), os.path.join(self.backup_dir, BACKUP_STATE))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Checkpoints(keras.callbacks.Callback):
    """Save ``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves.

    Skips any epoch whose logs or weights are not finite, so a NaN never replaces a good
    checkpoint.

    Args:
        directory: str, where the ``.keras`` files go.
        monitor: str, the metric for ``best.keras``; lower is better unless it names an
            accuracy or AUC.
        history: the run's earlier ``monitor`` values (a resumed run), so ``best.keras``
            is only replaced by a better epoch.
    """

    def __init__(self, directory: str, monitor: str = "val_loss", history=()):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.mode = "max" if any(k in monitor for k in ("acc", "auc")) else "min"
        finite = [v for v in history if math.isfinite(v)]
        self.best = (max(finite) if self.mode == "max" else min(finite)) if finite else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _logs_finite(logs) or not weights_finite(self.model):
            return
        os.makedirs(self.directory, exist_ok=True)
        _atomic(self.model.save, os.path.join(self.directory, "last.keras"))
        value = logs.get(self.monitor)
        if value is None:
            return
        improved = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if improved:
            self.best = float(value)
            _atomic(self.model.save, os.path.join(self.directory, "best.keras"))


class HistoryLog(keras.callbacks.Callback):
    """Keep the run's full history, write ``history.csv`` and ``curves.png`` every epoch.

    On a resumed run the earlier epochs come back from ``history.csv`` (rows from epochs
    the backup had not reached are dropped, as those epochs run again).

    Args:
        directory: str, where ``history.csv`` and ``curves.png`` go.
        initial_epoch: int, the epoch this run starts at.
    """

    def __init__(self, directory: str, initial_epoch: int = 0):
        super().__init__()
        self.csv_path = os.path.join(directory, "history.csv")
        self.png_path = os.path.join(directory, "curves.png")
        self.rows: list[dict[str, float]] = []
        if initial_epoch and os.path.exists(self.csv_path):
            with open(self.csv_path) as f:
                self.rows = [
                    {k: float(v) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(f)
                    if int(row["epoch"]) < initial_epoch
                ]

    @property
    def history(self) -> dict[str, list[float]]:
        """``{metric: [value per epoch]}`` over every epoch of the run, resumed or not."""
        keys = dict.fromkeys(k for row in self.rows for k in row if k != "epoch")
        return {k: [row.get(k, math.nan) for row in self.rows] for k in keys}

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}}
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        plot_history(self.history, self.png_path)


def precise_batch_norm(model: keras.Model, batches) -> int:
    """Re-estimate every ``BatchNormalization`` layer's moving mean and variance with the
    current weights: the mean of its batch statistics over ``batches`` (PreciseBN, Wu &
    Johnson 2021). The weights do not change.

    Args:
        model: a Keras model (nested models and layers included).
        batches: an iterable of training batches, ``(x, ...)`` tuples or bare inputs.

    Returns:
        The number of batches used; 0 if ``model`` has no ``BatchNormalization`` layer.
    """
    norms = [layer for layer in _layers_within(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    count = 0
    try:
        for batch in batches:
            count += 1
            for layer in norms:  # moving = moving * (k-1)/k + batch / k: a running mean
                layer.momentum = (count - 1) / count
            model(batch[0] if isinstance(batch, tuple) else batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return count


class PreciseBatchNorm(keras.callbacks.Callback):
    """``precise_batch_norm`` over ``batches`` batches of ``dataset`` before each validation
    and, if training ran since, at the end of each epoch (``TrainConfig.precise_bn_batches``).

    Put it before the checkpoint callbacks: they then save the statistics validation used.
    """

    def __init__(self, dataset, batches: int):
        super().__init__()
        self.dataset, self.batches = dataset, batches
        self._stale = True

    def _recompute(self):
        precise_batch_norm(self.model, self.dataset.take(self.batches))
        self._stale = False

    def on_train_batch_end(self, batch, logs=None):
        self._stale = True

    def on_test_begin(self, logs=None):
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        if self._stale:  # no validation this epoch
            self._recompute()


def _layers_within(model):
    """Every layer of ``model`` and of the models nested in it (their public ``layers``)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers_within(layer)
