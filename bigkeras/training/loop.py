"""A custom training loop for ``MultiWorkerMirroredStrategy``, where Keras 3 ``fit`` fails.

Under TF 2.16+ and Keras 3, ``fit`` on several workers breaks twice: before the first step
it averages an input batch across workers with an eager ``strategy.reduce`` (which
collective all-reduce cannot do on ``PerReplica`` inputs), and after every step it reduces
the scalar metrics with ``axis=0`` ("Invalid reduction dimension 0"). This loop keeps
everything else of ``fit`` -- the model's own ``train_step``/``test_step``, its optimizer
(which all-reduces the gradients), the same callbacks, progress bar and history -- and
reads the metrics once per step in cross-replica context, where their sync-on-read
variables sum over all replicas of all workers: the global values, with no reduction of
per-replica scalars at all.

It works under any strategy; ``train()`` uses it only where ``fit`` cannot run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import tensorflow as tf

from bigkeras import private_apis


def fit_orders_before(initial_epoch: int, infinite: bool, *, symbolic_build: bool = True) -> int:
    """How many iterators Keras 3 ``fit`` has drawn over the training data before the epoch
    ``initial_epoch`` starts (each draws a new order from a dataset shuffled every iteration).

    ``fit`` under a strategy takes one batch to build the model (``symbolic_build``); on a finite
    dataset it makes one iterator at the start of each epoch and a spare one at its end; an
    infinite (repeated) one is iterated once for the whole run.
    """
    return int(symbolic_build) + (0 if infinite else 2 * initial_epoch)


def fit_distributed(
    model: keras.Model,
    train_data: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    initial_epoch: int = 0,
    val_data: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    callbacks=(),
    verbose: int = 1,
    steps_per_execution: int = 1,
    collectives: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> keras.callbacks.History:
    """Train ``model`` on batched ``train_data`` like ``model.fit``, under its strategy.

    Args:
        model: a compiled ``keras.Model`` built under ``strategy.scope()``.
        train_data: a batched ``tf.data.Dataset`` (global batch) of ``(x, y)``; when it is
            infinite the iterator runs on across epochs, as in ``fit``.
        epochs: int, the epoch to stop at.
        steps_per_epoch: int, steps per epoch.
        initial_epoch: int, the epoch to start at (after a restore).
        val_data: optional batched ``tf.data.Dataset`` for validation after each epoch.
        validation_steps: int or None, validation steps; None runs the whole ``val_data``.
        callbacks: Keras callbacks, driven as ``fit`` drives them.
        verbose: int, 0 silent, 1 progress bar, 2 one line per epoch.
        steps_per_execution: int, steps per ``tf.function`` call.
        collectives: a context manager factory entered around the parts that talk to the
            other workers (building the optimizer state, each epoch's steps and
            validation) but not around the epoch-end callbacks: ``train()`` passes
            ``faults.watch_peers``, which must not mistake a peer that finished and exited
            for a lost one.

    Returns:
        The ``keras.callbacks.History`` of this call (also ``model.history``).
    """
    strategy = model.distribute_strategy
    with collectives(), strategy.scope():
        # Create the metric, loss and optimizer state before tracing, from the input spec
        # alone (what fit's symbolic build does, minus its cross-worker input reduction).
        private_apis.build_compiled_state(model, train_data.element_spec)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_steps(iterator, n):
        for _ in tf.range(n):
            strategy.run(model.train_step, args=(next(iterator),))
        return model.get_metrics_result()

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    callbacks = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    infinite = train_data.cardinality() == tf.data.INFINITE_CARDINALITY
    dist_train = strategy.experimental_distribute_dataset(train_data)
    dist_val = strategy.experimental_distribute_dataset(val_data) if val_data is not None else None
    # Every iterator over a shuffled dataset draws its next order: draw them as fit does, so
    # each epoch reads the examples in the order a one-process fit under a strategy reads them.
    for _ in range(fit_orders_before(initial_epoch, infinite)):
        iter(dist_train)
    iterator = iter(dist_train)

    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        if not infinite and epoch > initial_epoch:
            iter(dist_train)  # fit's spare iterator at the end of each whole epoch
            iterator = iter(dist_train)
        logs = {}
        with collectives():
            for step in range(0, steps_per_epoch, steps_per_execution):
                n = min(steps_per_execution, steps_per_epoch - step)
                callbacks.on_train_batch_begin(step)
                logs = train_steps(iterator, tf.constant(n))
                callbacks.on_train_batch_end(step + n - 1, logs)
                if model.stop_training:
                    break
            epoch_logs = {k: float(v) for k, v in logs.items()}
            if dist_val is not None:
                model.reset_metrics()
                callbacks.on_test_begin()  # as fit's validation does: PreciseBN re-estimates here
                for i, batch in enumerate(dist_val):
                    if validation_steps is not None and i >= validation_steps:
                        break
                    test_step(batch)
                val_logs = {k: float(v) for k, v in model.get_metrics_result().items()}
                callbacks.on_test_end(val_logs)
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=epoch_logs)
    return model.history
