"""One worker of a two-worker run that records the ids of the examples it trains on.

The test writes sharded TFRecords of ``{"x", "id", "label"}``; this process trains one
epoch on them under ``MultiWorkerMirroredStrategy`` for each read mode and writes, per mode,
the ids its replica consumed in training steps (recorded inside the model's forward pass,
so prefetched but unused examples do not count) to ``--ids`` as JSON.

    TF_CONFIG=... python tests/sharding_worker.py --prefix /tmp/d/train --out /tmp/out --ids ids0.json

Modes: ``explicit`` reads ``read_tfrecords(num_workers=2, worker_index=<task index>)``
(policy OFF); ``file`` reads ``read_tfrecords(num_workers=1)`` (policy FILE).
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bigkeras.data.tfrecords import read_spec, read_tfrecords  # noqa: E402
from bigkeras.training import TrainConfig, make_strategy, train  # noqa: E402

BATCH_PER_WORKER = 16


class RecordIds(keras.layers.Layer):
    """Pass ``x`` through; in training, append the batch's ``ids`` to ``seen``."""

    def __init__(self, seen: list, **kwargs):
        super().__init__(**kwargs)
        self.record = seen.extend  # not the list itself: Keras would track a copy of it

    def call(self, x, ids, training=None):
        if not training:
            return x
        done = tf.py_function(lambda t: self.record(t.numpy().tolist()) or 0, [ids], tf.int32)
        done.set_shape(())
        # A data dependency keeps the recording in every traced step.
        return x + 0.0 * tf.cast(tf.stop_gradient(done), x.dtype)


def model_fn(seen: list):
    def build():
        x = keras.Input((8,), name="x")
        ids = keras.Input((), dtype="int64", name="id")
        h = RecordIds(seen)(x, ids)
        h = keras.layers.Dense(16, activation="relu")(h)
        return keras.Model({"x": x, "id": ids}, keras.layers.Dense(3)(h), name="recorder")

    return build


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--modes", default="explicit,file")
    args = parser.parse_args()
    strategy = make_strategy("multi_worker")
    index = strategy.cluster_resolver.task_id
    num_workers = strategy.num_replicas_in_sync  # one CPU replica per worker
    steps = read_spec(args.prefix)["num_examples"] // (BATCH_PER_WORKER * num_workers)

    seen = {}
    for mode in args.modes.split(","):
        if mode == "explicit":
            data = read_tfrecords(args.prefix, num_workers=num_workers, worker_index=index)
        elif mode == "file":
            data = read_tfrecords(args.prefix)
        else:
            raise ValueError(f"--modes: unknown mode {mode!r}; use explicit and/or file.")
        data = data.map(lambda e: ({"x": e["x"], "id": e["id"]}, e["label"]))
        seen[mode] = []
        config = TrainConfig(
            epochs=1, batch_size=BATCH_PER_WORKER, steps_per_epoch=steps, strategy="multi_worker",
            run_dir=os.path.join(args.out, mode), tensorboard=False, verbose=0, resume=False,
        )
        train(model_fn(seen[mode]), data, config=config)
    with open(args.ids, "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main()
