"""``train()``: the one training entry point every recipe uses."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from bigkeras.training import cluster_config, runs
from bigkeras.training import strategy as strategies
from bigkeras.training.callbacks import Checkpoints, FaultTolerance, HistoryLog, PreciseBatchNorm
from bigkeras.training.config import TrainConfig
from bigkeras.training.faults import watch_peers
from bigkeras.training.lora import enable_lora
from bigkeras.training.loop import fit_distributed, fit_orders_before
from bigkeras.training.optim import make_optimizer


@dataclass
class TrainResult:
    """What ``train()`` returns.

    Attributes:
        model: the trained ``keras.Model``.
        history: ``{metric: [value per epoch]}`` over the whole run, resumed epochs included.
        run_dir: where the checkpoints, history, curves and logs were written.
        is_chief: whether this process wrote ``run_dir`` (False on the other workers of a
            multi-worker run: they must not write results or exports either).

    On several workers ``model`` is a copy outside the strategy (``local_copy``) with the
    final weights, the same on every worker: held-out scoring, ``predict`` and the export
    run on it as in one process.
    """

    model: keras.Model
    history: dict[str, list[float]]
    run_dir: Path
    is_chief: bool = True


def train(
    model: str | Callable[[], keras.Model],
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset | None = None,
    config: TrainConfig | None = None,
    *,
    model_kwargs: dict[str, Any] | None = None,
    loss=None,
    metrics: Sequence | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Build, compile and train a model under a ``tf.distribute`` strategy.

    The model is built and compiled inside ``strategy.scope()``; the data is batched with
    the global batch size (``config.batch_size`` per replica times the replicas),
    prefetched and sharded across workers. The run directory gets ``config.json``,
    ``history.csv``, ``curves.png``, ``best.keras``/``last.keras``, a ``backup/`` for
    fault tolerance (a rerun with ``resume=True`` continues from it, if it is a backup of the
    same model and training settings) and TensorBoard ``logs/``, every file replaced
    atomically; a lock keeps a second run out of it (``bigkeras.training.runs``). On several
    workers only the chief writes there, and the workers check that they resume at one epoch.

    Sharding across workers (``MultiWorkerMirroredStrategy``): the auto-shard policy the
    dataset carries is respected. ``OFF`` (the dataset is already this worker's share, as
    ``read_tfrecords(num_workers=n, worker_index=i)`` returns), ``FILE`` (each worker reads
    whole files, as a ``read_tfrecords(num_workers=1)`` dataset asks), ``DATA`` and
    ``HINT`` are kept as they are. Only a dataset whose policy is unset (``AUTO``, e.g.
    ``from_tensor_slices``) gets ``DATA``: every worker runs the whole pipeline and keeps
    its part of each global batch, so the run matches one process at the same global batch.
    With ``OFF`` or ``FILE`` each worker consumes ``global batch / workers`` examples of its
    own share per step; set ``config.steps_per_epoch`` (TFRecord lengths are unknown) so
    that an epoch is one pass over the shares.

    A lost worker: on several workers a thread probes the other workers while training;
    when one dies the survivors' collectives are aborted and ``train()`` raises
    ``bigkeras.training.faults.WorkerLostError`` (a ``RuntimeError``) instead of hanging,
    within ``faults.DETECTION_BOUND_SECONDS``. Rerun the same command on every worker:
    training resumes from the chief's last backup in ``run_dir/backup``, which every
    worker must be able to read (a shared filesystem).

    Args:
        model: a registered model name (built with ``bigkeras.build(model, **model_kwargs)``)
            or a zero-argument callable returning a ``keras.Model``.
        train_data: an unbatched ``tf.data.Dataset`` of ``(features, label)`` examples,
            already shuffled if it should be (``features`` may be a dict of named inputs).
        val_data: an optional unbatched ``tf.data.Dataset`` like ``train_data``.
        config: the ``TrainConfig``; default ``TrainConfig()``.
        model_kwargs: dict, overrides for the registered model's preset (names only).
        loss: a Keras loss; default ``SparseCategoricalCrossentropy(from_logits=True)``
            (every bigkeras builder outputs logits).
        metrics: Keras metrics; default ``["accuracy"]``.
        callbacks: extra Keras callbacks, run after the harness's own.

    Returns:
        A ``TrainResult(model, history, run_dir)``.

    Raises:
        bigkeras.training.runs.RunDirBusyError: another run holds ``run_dir`` (at once,
            before anything is built).
        bigkeras.training.runs.ResumeMismatchError: ``resume=True`` and ``run_dir/backup``
            belongs to another model or other training settings (the message says which and
            how to start fresh).
        bigkeras.training.cluster_config.TFConfigError: a malformed ``TF_CONFIG``.
        bigkeras.training.cluster_config.PeersUnreachableError: on several workers, a peer
            that did not answer within ``config.peer_deadline``.

    Example:
        >>> ds = tf.data.Dataset.from_tensor_slices((x, y))
        >>> result = train("mlp_tiny", ds, config=TrainConfig(epochs=2, run_dir="runs/mlp"))
        >>> result.history["loss"]
    """
    config = TrainConfig() if config is None else config
    _check_arguments(model, train_data, val_data, config, model_kwargs)
    with _run_lock(config):
        return _train(model, train_data, val_data, config, model_kwargs, loss, metrics, callbacks)


def _run_lock(config: TrainConfig):
    """The run directory's lock, taken by the process that writes it (the chief) before
    anything else: a second run there stops at once (``runs.RunDirBusyError``)."""
    if cluster_config.is_chief_task(cluster_config.tf_config()):  # TF_CONFIG checked here, first
        return runs.run_lock(config.run_dir)
    return contextlib.nullcontext()


def _train(model, train_data, val_data, config, model_kwargs, loss, metrics, callbacks) -> TrainResult:
    """``train()`` once its arguments are checked and it holds the run directory."""
    strategy = _setup(config)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = config.steps_per_epoch or _num_batches(
        train_data, global_batch, _input_shares(train_data, strategy)
    )
    keras_model, initial_epoch, fingerprint = _compiled_model(
        model, model_kwargs, config, strategy, steps_per_epoch, loss, metrics
    )
    with strategies.writable_run_dir(config.run_dir, strategy) as out:
        config.write(os.path.join(out, "config.json"), model=model if isinstance(model, str) else keras_model.name,
                     kwargs=model_kwargs)  # fmt: skip
        history_log = HistoryLog(out, initial_epoch)
        harness = _harness_callbacks(out, config, train_data, val_data, global_batch, history_log, fingerprint)
        train_ds = _pipeline(
            train_data,
            global_batch,
            training=True,
            repeat=config.steps_per_epoch is not None,
            skip=initial_epoch * steps_per_epoch if config.steps_per_epoch else 0,
        )
        val_ds = _pipeline(val_data, global_batch, training=False) if val_data is not None else None
        _fit(keras_model, strategy, config, train_ds, val_ds, steps_per_epoch, initial_epoch, [*harness, *callbacks])
        if strategies.is_multi_worker(strategy):
            # Every worker returns once the chief has written its checkpoints, then holds a copy
            # outside the strategy: scoring, prediction and export run as in one process.
            with watch_peers(strategy, _backup_dir(config)):
                strategies.barrier(strategy)
            keras_model = local_copy(keras_model)

    history = history_log.history
    if not all(math.isfinite(v) for v in history.get("loss", [])):
        warnings.warn(
            f"Training stopped on a non-finite loss; the checkpoints in {config.run_dir} hold the "
            "last finite weights.",
            stacklevel=2,
        )
    return TrainResult(keras_model, history, Path(config.run_dir), strategies.is_chief(strategy))


def local_copy(model: keras.Model) -> keras.Model:
    """``model`` rebuilt outside any strategy, with its weights and its compile settings.

    After a multi-worker run every worker holds the same weights; Keras 3's ``evaluate`` and
    ``predict`` (and anything calling the model eagerly) fail or talk to the other workers
    under ``MultiWorkerMirroredStrategy``, while the copy runs as a one-process model.
    """
    with tf.distribute.get_strategy().scope():  # the default strategy: outside train()'s scope here
        try:
            copy = keras.models.model_from_json(model.to_json())
        except (TypeError, ValueError) as err:  # a class Keras cannot rebuild from its config
            warnings.warn(f"The trained model cannot be rebuilt outside the strategy ({err}); train() returns "
                          "the distributed model: register its custom classes with "
                          "keras.saving.register_keras_serializable to score and export it.", stacklevel=3)
            return model
        copy.set_weights(model.get_weights())
        if model.compiled:
            copy.compile_from_config(model.get_compile_config())
    return copy


def _check_arguments(model, train_data, val_data, config, model_kwargs) -> None:
    """Every argument error, before anything runs."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"`config` must be a TrainConfig, got {type(config).__name__}.")
    _check_dataset("train_data", train_data)
    if val_data is not None:
        _check_dataset("val_data", val_data)
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("`tensorboard=True` needs the tensorboard package: pip install tensorboard, "
                         "or set tensorboard=False.")
    if model_kwargs and not isinstance(model, str):
        raise ValueError("`model_kwargs` applies to a registered model name only; got a callable `model`.")


def _setup(config: TrainConfig) -> tf.distribute.Strategy:
    """The strategy (first: logical CPU devices and collective ops need an untouched runtime),
    seeds, determinism, and a fresh backup unless resuming."""
    strategy = strategies.make_strategy(config.strategy, cpu_replicas=config.cpu_replicas,
                                        peer_deadline=config.peer_deadline)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if not config.resume and strategies.is_chief(strategy):
        shutil.rmtree(_backup_dir(config), ignore_errors=True)
    return strategy


def _backup_dir(config: TrainConfig) -> str:
    return os.path.join(config.run_dir, "backup")  # every worker restores from the chief's


def _compiled_model(model, model_kwargs, config, strategy, steps_per_epoch, loss, metrics):
    """Build (LoRA if asked), compile and restore the model in the strategy's scope.

    Returns:
        ``(model, initial_epoch, fingerprint)``: the epoch a resumed run starts at (0 for a
        fresh one; on several workers, one they all found) and the run's ``runs.fingerprint``.

    Raises:
        runs.ResumeMismatchError: the backup is of another model or training settings.
        cluster_config.WorkersDisagreeError: the workers found different backups.
    """
    # Optimizer steps in the run: what the schedules decay over.
    total_steps = max(config.epochs * steps_per_epoch // config.grad_accum_steps, 1)
    with strategy.scope(), _dtype_policy(config.mixed_precision):
        keras_model = _build(model, model_kwargs)
        if config.lora_rank:
            enable_lora(keras_model, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets)
        keras_model.compile(
            optimizer=make_optimizer(config, keras_model, total_steps),
            loss=loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=list(metrics) if metrics is not None else ["accuracy"],
            jit_compile=_resolve_jit(config.jit_compile),
            steps_per_execution=config.steps_per_execution,
        )
        fingerprint = runs.fingerprint(keras_model, config)
        initial_epoch = 0
        if config.resume:
            initial_epoch = runs.read_backup(keras_model, _backup_dir(config), fingerprint=fingerprint,
                                             run_dir=config.run_dir)  # fmt: skip
        initial_epoch = strategies.agree_on_epoch(strategy, initial_epoch, _backup_dir(config))
    return keras_model, initial_epoch, fingerprint


def _harness_callbacks(out, config, train_data, val_data, global_batch, history_log, fingerprint) -> list:
    """PreciseBN, NaN stop, history, checkpoints, backups, early stopping, TensorBoard."""
    monitor = config.monitor
    if val_data is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    callbacks = []
    if config.precise_bn_batches:  # before the checkpoints: they save what validation measured
        # Its own pass over the training data: the first batches, not a resumed stream's skip.
        precise_ds = _pipeline(train_data, global_batch, training=True)
        callbacks.append(PreciseBatchNorm(precise_ds, config.precise_bn_batches))
    callbacks += [
        keras.callbacks.TerminateOnNaN(),
        history_log,
        Checkpoints(out, monitor, history_log.history.get(monitor, ())),
        FaultTolerance(os.path.join(out, "backup"), config.backup_freq, fingerprint),
    ]
    if config.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping_patience))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "logs"), profile_batch=0))
    return callbacks


def _fit(model, strategy, config, train_ds, val_ds, steps_per_epoch, initial_epoch, callbacks) -> None:
    """Keras' ``fit``, or on several workers the loop that replaces it (``loop.py``)."""
    fit_args = dict(
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        validation_steps=config.validation_steps,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    if strategies.is_multi_worker(strategy):
        # Keras 3 fit fails under multi-worker collectives; see bigkeras/training/loop.py.
        fit_distributed(
            model,
            train_ds,
            val_data=val_ds,
            steps_per_epoch=steps_per_epoch,
            steps_per_execution=config.steps_per_execution,
            collectives=functools.partial(watch_peers, strategy, _backup_dir(config)),
            **fit_args,
        )
    else:
        # A resumed run draws the shuffle orders of the epochs it skips (fit draws its build's itself).
        for _ in range(fit_orders_before(initial_epoch, config.steps_per_epoch is not None, symbolic_build=False)):
            iter(train_ds)
        model.fit(train_ds, validation_data=val_ds, steps_per_epoch=config.steps_per_epoch, shuffle=False, **fit_args)


def _build(model, model_kwargs) -> keras.Model:
    if isinstance(model, str):
        from bigkeras.registry import build

        return build(model, **(model_kwargs or {}))
    if not callable(model):
        raise ValueError(
            f"`model` must be a registered model name or a callable returning a keras.Model, got {model!r}."
        )
    built = model()
    if not isinstance(built, keras.Model):
        raise ValueError(f"`model` must return a keras.Model, got {type(built).__name__}.")
    return built


def _check_dataset(name: str, data) -> None:
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(f"`{name}` must be an unbatched tf.data.Dataset of (features, label), got {type(data).__name__}.")
    spec = data.element_spec
    if not (isinstance(spec, tuple) and len(spec) in (2, 3)):
        raise ValueError(f"`{name}` must yield (features, label) or (features, label, weight) tuples, got {spec}.")


def _input_shares(data: tf.data.Dataset, strategy: tf.distribute.Strategy) -> int:
    """How many workers each hold a share like ``data``: the workers when its policy is
    ``OFF`` (the dataset is this worker's share), else 1 (it is the whole input)."""
    if not strategies.is_multi_worker(strategy):
        return 1
    if data.options().experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.OFF:
        return 1
    return strategies.cluster_size()


def _num_batches(data: tf.data.Dataset, global_batch: int, shares: int = 1) -> int:
    """Steps in one pass of the unbatched ``data``; raises if its length is unknown.

    A worker's own share (``shares`` workers, policy ``OFF``) is batched with the global
    batch and each batch split into ``shares`` steps of ``global_batch / shares``.
    """
    n = int(data.cardinality())
    if n < 0:
        raise ValueError(
            "`steps_per_epoch` must be set when `train_data` has unknown or infinite length "
            f"(its cardinality is {n})."
        )
    if n < global_batch:
        raise ValueError(
            f"`train_data` has {n} examples, fewer than one global batch of {global_batch} "
            "(`batch_size` x replicas); lower `batch_size`."
        )
    return n // global_batch * shares


def _pipeline(data, global_batch, *, training, repeat=False, skip=0):
    """Batch with the global batch, check labels, repeat/skip for resumes, shard and prefetch."""
    # Training drops the last partial batch: every replica gets an equal, static shape.
    data = data.batch(global_batch, drop_remainder=training)
    if training:
        data = data.map(_check_labels, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        # With steps_per_epoch the stream runs on across epochs; a resumed run skips what
        # the epochs before it consumed, so it sees exactly the batches it would have.
        data = data.repeat().skip(skip)
    return with_shard_policy(data).prefetch(tf.data.AUTOTUNE)


def with_shard_policy(data: tf.data.Dataset) -> tf.data.Dataset:
    """``data`` with the auto-shard policy ``train()`` distributes it with.

    A policy the dataset already carries (``OFF``, ``FILE``, ``DATA``, ``HINT``) is kept:
    the caller knows how its input is split (``read_tfrecords(num_workers=2,
    worker_index=i)`` reads this worker's files and sets ``OFF``; a one-worker read sets
    ``FILE``). Only an unset (``AUTO``) dataset gets ``DATA``: every worker runs the whole
    pipeline and keeps its part of each global batch, so the workers together see the
    batches one process would.
    """
    policy = tf.data.experimental.AutoShardPolicy
    if data.options().experimental_distribute.auto_shard_policy != policy.AUTO:
        return data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.DATA
    return data.with_options(options)


def _check_labels(x, y, *weights):
    # A NaN label would otherwise surface as an out-of-range class id deep in the loss.
    y = tf.nest.map_structure(
        lambda t: tf.debugging.check_numerics(t, "bigkeras: the labels contain NaN or Inf")
        if t.dtype.is_floating
        else t,
        y,
    )
    return (x, y, *weights)


@contextlib.contextmanager
def _dtype_policy(mixed_precision):
    """Set the global dtype policy while the model is built, then put the old one back."""
    if not mixed_precision:
        yield
        return
    if mixed_precision == "auto":
        mixed_precision = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _resolve_jit(jit_compile):
    # XLA measured slower than the default kernels on the CPUs here (FIELD_NOTES).
    if jit_compile == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return jit_compile
