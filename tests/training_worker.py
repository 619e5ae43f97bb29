"""A small training run in its own process, for the tests that need a fresh TensorFlow.

Logical CPU devices, TF_CONFIG and SIGKILL all need a process of their own. This trains
``mlp_tiny`` on fixed synthetic data with ``bigkeras.training.train`` and saves the final
weights to ``--weights`` (an .npz) and the history to ``--history`` (JSON).

    python tests/training_worker.py --run-dir /tmp/run --weights /tmp/w.npz --cpu-replicas 2
"""

import argparse
import json
import logging
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bigkeras.training import TrainConfig, make_strategy, train  # noqa: E402


def synthetic_data(n: int = 256, seed: int = 0) -> tf.data.Dataset:
    """Fixed (8, 8) float features with 3 classes that depend on them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8)).astype("float32")
    y = (x[:, 0, :3].argmax(-1)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y))


class SlowDown(keras.callbacks.Callback):
    """Sleep after each step, so a test has time to kill the run between checkpoints."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--history")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--cpu-replicas", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="per replica")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--precise-bn", type=int, default=0, help="TrainConfig.precise_bn_batches")
    parser.add_argument("--model-kwargs", default="{}", help="JSON overrides of mlp_tiny (dropout, batch_norm)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # Before the datasets touch the runtime: logical CPUs and collectives configure it.
    make_strategy(args.strategy, cpu_replicas=args.cpu_replicas)

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        strategy=args.strategy,
        cpu_replicas=args.cpu_replicas,
        optimizer=args.optimizer,
        learning_rate=1e-2,
        run_dir=args.run_dir,
        tensorboard=False,
        verbose=2,
        seed=0,
        deterministic=True,
        precise_bn_batches=args.precise_bn,
    )
    extra = [SlowDown(args.step_delay)] if args.step_delay else []
    result = train("mlp_tiny", synthetic_data(), synthetic_data(64, seed=1), config, callbacks=extra,
                   model_kwargs=json.loads(args.model_kwargs))
    np.savez(args.weights, *[np.asarray(w) for w in result.model.get_weights()])
    if args.history:
        with open(args.history, "w") as f:
            json.dump(result.history, f)


if __name__ == "__main__":
    main()
