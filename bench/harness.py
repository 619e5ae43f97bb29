"""Benchmark: the harness's train() against a raw model.fit, and training MFU.

For ResNet-50 at 64x64 and a GPT decoder (the ``gpt_corpus`` preset), measured side by
side in one process on the same data with the same compile settings (optimizer, loss,
metrics, jit_compile, steps_per_execution):

- steady-state steps/s of ``bigkeras.training.train`` and of ``model.fit``, with fit timed
  before and after train() so drifting machine load hits both; the ratio should be >= 0.97;
- training MFU: achieved FLOP/s (3x the forward FLOPs per step, x steps/s) over the peak
  FLOP/s of a large fp32 ``tf.matmul`` measured in the same run.

Forward FLOPs: TensorFlow's profiler on the traced forward graph for ResNet-50 (convs and
matmuls); analytic for the GPT (the profiler does not count Einsum), per token
``2 x (kernel parameters) + 2 x d x V (tied head) + 4 x L x T x d (attention)``.

    .venv/bin/python bench/harness.py            # about 2-3 minutes on 2 CPU cores
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bigkeras  # noqa: E402
from bigkeras.training import TrainConfig, train  # noqa: E402
from bigkeras.training.optim import make_optimizer  # noqa: E402

WARMUP = 2  # steps excluded from timing (tracing, first allocations)
TIMED = 8


class StepTimer(keras.callbacks.Callback):
    """Steady-state steps/s from the times of batch ends after the warmup steps."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def steps_per_second(self) -> float:
        t = self.times[WARMUP - 1:]
        return (len(t) - 1) / (t[-1] - t[0])


def matmul_peak(n: int = 2048, reps: int = 8) -> float:
    """FLOP/s of an (n, n) x (n, n) fp32 matmul, the best of ``reps`` runs."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    for _ in range(2):
        matmul().numpy()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def profiled_forward_flops(model: keras.Model, batch) -> float:
    """Forward FLOPs of one batch, from TensorFlow's profiler on the traced graph."""
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), batch)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def gpt_forward_flops(model: keras.Model, kwargs: dict, batch: int, seq: int) -> float:
    """Forward FLOPs of one GPT batch: matmul kernels, the tied output head and attention."""
    embeddings = {w.path for layer in model.layers if "embedding" in layer.name for w in layer.weights}
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights
                  if len(w.shape) >= 2 and w.path not in embeddings)
    d, vocab, layers = kwargs["hidden_dim"], kwargs["vocab_size"], kwargs["num_layers"]
    per_token = 2 * kernels + 2 * d * vocab + 4 * layers * seq * d
    return float(per_token * batch * seq)


def compare(label, name, kwargs, data, batch_size, forward_flops, peak):
    """Time train() and raw fit on ``data``; print steps/s, their ratio and the MFU."""
    steps = WARMUP + TIMED
    config = TrainConfig(epochs=1, batch_size=batch_size, steps_per_epoch=steps, strategy="default",
                         tensorboard=False, verbose=0, run_dir=tempfile.mkdtemp(prefix="bench_"))

    # The reference: model.fit with the compile settings train() uses.
    keras.utils.set_random_seed(config.seed)
    model = bigkeras.build(name, **kwargs)
    model.compile(
        optimizer=make_optimizer(config, model, total_steps=steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
        steps_per_execution=config.steps_per_execution,
    )
    batched = data.batch(batch_size, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)
    fit_timer, train_timer = StepTimer(), StepTimer()
    fit_rates = []

    def fit_once():
        model.fit(batched, epochs=1, steps_per_epoch=steps, callbacks=[fit_timer], verbose=0)
        fit_rates.append(fit_timer.steps_per_second())

    fit_once()
    train(name, data, config=config, model_kwargs=kwargs, callbacks=[train_timer])
    fit_once()  # the compiled train function is reused: no retrace

    fit_rate = float(np.mean(fit_rates))
    train_rate = train_timer.steps_per_second()
    achieved = 3 * forward_flops * train_rate
    print(
        f"{label:<28} train() {train_rate:6.3f} steps/s | model.fit {fit_rate:6.3f} steps/s "
        f"(runs {', '.join(f'{r:.3f}' for r in fit_rates)}) | ratio {train_rate / fit_rate:5.3f} | "
        f"{3 * forward_flops / 1e9:7.2f} GFLOP/step | {achieved / 1e9:6.1f} GFLOP/s | MFU {achieved / peak:5.1%}",
        flush=True,
    )


def main():
    start = time.perf_counter()
    peak = matmul_peak()
    print(f"matmul peak (fp32, 2048^3): {peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} CPU cores", flush=True)
    rng = np.random.default_rng(0)

    # ResNet-50 at 64x64, 10 classes.
    batch = 16
    resnet_kwargs = {"input_shape": (64, 64, 3), "num_classes": 10}
    images = rng.standard_normal((batch * 4, 64, 64, 3)).astype("float32")
    labels = rng.integers(0, 10, len(images)).astype("int32")
    flops = profiled_forward_flops(bigkeras.build("resnet50", **resnet_kwargs), images[:batch])
    compare("resnet50 64x64 b16", "resnet50", resnet_kwargs,
            tf.data.Dataset.from_tensor_slices((images, labels)), batch, flops, peak)

    # GPT decoder (gpt_corpus preset, dropout off for timing), sequence 128.
    batch, seq = 16, 128
    gpt_kwargs = {**bigkeras.registry.get("gpt_corpus").kwargs, "dropout": 0.0}
    ids = rng.integers(1, gpt_kwargs["vocab_size"], (batch * 4, seq + 1)).astype("int32")
    features = {"token_ids": ids[:, :-1], "padding_mask": np.ones((len(ids), seq), "int32")}
    flops = gpt_forward_flops(bigkeras.build("gpt_corpus", **gpt_kwargs), gpt_kwargs, batch, seq)
    compare(f"gpt_corpus T={seq} b{batch}", "gpt_corpus", gpt_kwargs,
            tf.data.Dataset.from_tensor_slices((features, ids[:, 1:])), batch, flops, peak)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
