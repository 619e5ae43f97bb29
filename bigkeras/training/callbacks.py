"""The harness's callbacks: fault-tolerant backups, finite-only checkpoints, history and plots.

Keras' own ``BackupAndRestore`` and ``ModelCheckpoint`` save whatever the weights are; after
a NaN step (``TerminateOnNaN`` stops at the end of that step, and the epoch still ends) they
would overwrite good checkpoints with NaN weights. These save only finite weights, write
atomically (a kill mid-write leaves the previous file), and write where ``train()`` tells
them, which on non-chief workers is a temporary directory.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings

import keras
import numpy as np

from bigkeras.training.plots import plot_history
from bigkeras.training.runs import save_atomic, write_atomic, write_backup


def weights_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` (and of its optimizer) is finite."""
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    # The TensorFlow variable's own numpy(): keras.ops.convert_to_numpy took 0.8 s on MiniLM's first call, this 0.07 s.
    return all(np.isfinite(v.value.numpy()).all() for v in variables if _is_float(v))


def _is_float(v) -> bool:
    return "float" in keras.backend.standardize_dtype(v.dtype)


def _logs_finite(logs) -> bool:
    return all(math.isfinite(float(v)) for v in (logs or {}).values() if np.ndim(v) == 0)


class FaultTolerance(keras.callbacks.Callback):
    """Back up model and optimizer state every epoch or every ``save_freq`` steps.

    The counterpart of ``keras.callbacks.BackupAndRestore``; ``train()`` restores with
    ``runs.read_backup`` before training and passes the epoch on as ``initial_epoch``. Each
    backup is written as one unit with the run's fingerprint (``runs.write_backup``). A
    mid-epoch backup records the epoch it was taken in, so a resumed run replays that
    epoch from its first batch with the backed-up weights (Keras 3's semantics); epoch
    backups resume exactly.

    Args:
        backup_dir: str, where ``latest.weights.h5`` and ``training_state.json`` go.
        save_freq: ``"epoch"`` or int, back up every this many steps.
        fingerprint: dict, ``runs.fingerprint(model, config)``, recorded with each backup.
    """

    def __init__(self, backup_dir: str, save_freq="epoch", fingerprint: dict | None = None):
        super().__init__()
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        self.fingerprint = fingerprint or {}
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
        write_backup(self.model, self.backup_dir, epoch=resume_epoch, fingerprint=self.fingerprint)


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
        save_atomic(self.model.save, os.path.join(self.directory, "last.keras"))
        value = logs.get(self.monitor)
        if value is None:
            return
        improved = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if improved:
            self.best = float(value)
            save_atomic(self.model.save, os.path.join(self.directory, "best.keras"))


class HistoryLog(keras.callbacks.Callback):
    """Keep the run's full history, write ``history.csv`` and ``curves.png`` every epoch.

    On a resumed run the earlier epochs come back from ``history.csv`` (rows from epochs
    the backup had not reached are dropped, as those epochs run again; a row that does not
    parse, as an older version's cut write could leave, is dropped with a warning). The file
    is replaced atomically each epoch.

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
            self.rows = [row for row in _read_history(self.csv_path) if row["epoch"] < initial_epoch]

    @property
    def history(self) -> dict[str, list[float]]:
        """``{metric: [value per epoch]}`` over every epoch of the run, resumed or not."""
        keys = dict.fromkeys(k for row in self.rows for k in row if k != "epoch")
        return {k: [row.get(k, math.nan) for row in self.rows] for k in keys}

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}}
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.csv_path, text.getvalue())
        plot_history(self.history, self.png_path)


def _read_history(path: str) -> list[dict[str, float]]:
    """The rows of a ``history.csv``; rows that do not parse are dropped with a warning."""
    rows = []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.DictReader(f), start=2):
            try:
                if None in row or None in row.values():  # fewer or more fields than the header: cut
                    raise ValueError(number)
                parsed = {k: float(v) for k, v in row.items() if v != ""}
                parsed["epoch"] = int(parsed["epoch"])
            except (KeyError, TypeError, ValueError):
                warnings.warn(f"{path}: line {number} is not a whole history row; dropped.", stacklevel=3)
                continue
            rows.append(parsed)
    return rows


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
