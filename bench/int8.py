"""Benchmark: an int8 export of the MiniLM review classifier against the float32 one.

Exports the same classifier twice, as the ``reviews_minilm`` recipe does (raw strings in,
WordPiece and packing in the graph): float32, and int8 (``export_saved_model(...,
quantize="int8")``: int8 weights of every Dense, EinsumDense and Embedding kernel with
per-channel scales, dequantized in the graph; ``bench/serving.py`` times every export kind,
Keras' dynamic ``"int8_dynamic"`` and XLA included). Then, for each export loaded as a SavedModel without Keras' help:

- the size of its ``variables/`` (target: int8 at most 0.35x float32);
- test accuracy on the 2,550 held-out review snippets (target: within 0.5 points);
- latency of ``serving_default`` at batch 1 and 32, the two timed in alternating turns, best
  turn of each (the ratio is reported whatever it is).

    .venv/bin/python bench/int8.py --model runs/reviews_minilm/best.keras   # a trained classifier
    .venv/bin/python bench/int8.py            # the checkpoint with an untrained head: sizes, latency
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bigkeras  # noqa: E402, F401  (registers the classes a .keras file names)
from bigkeras import checkpoints, data  # noqa: E402
from bigkeras.serving import export_saved_model, preprocessed_text_signatures  # noqa: E402

CHECKPOINT = "all-MiniLM-L6-v2"


def size_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in (path / "variables").iterdir())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained classifier .keras file (default: the checkpoint + a new head)")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()

    model = (keras.saving.load_model(args.model) if args.model
             else checkpoints.load_model(CHECKPOINT, num_classes=2))  # fmt: skip
    reviews = data.load("rotten_tomatoes")
    preprocess = data.BertSingleSegmentPreprocessor(checkpoints.load_tokenizer(CHECKPOINT),
                                                    sequence_length=args.sequence_length)  # fmt: skip

    def signatures(m):
        return preprocessed_text_signatures(m, preprocess, class_names=reviews.class_names,
                                            examples=reviews.test.x[:4])  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        paths = {kind: export_saved_model(model, kind, base_dir=tmp, signatures=signatures, quantize=q, warmup=False)
                 for kind, q in (("float32", None), ("int8", "int8"))}  # fmt: skip
        serve = {kind: tf.saved_model.load(str(p)).signatures["serving_default"] for kind, p in paths.items()}
        sizes = {kind: size_bytes(p) for kind, p in paths.items()}
        texts = tf.constant([str(t) for t in reviews.test.x])
        accuracy = {}
        for kind, fn in serve.items():
            ids = np.concatenate([fn(text=texts[i:i + 256])["class_id"].numpy() for i in range(0, len(texts), 256)])
            accuracy[kind] = float(np.mean(ids == reviews.test.y))
        best = {(kind, b): float("inf") for kind in serve for b in (1, 32)}
        for _ in range(args.turns):
            for batch in (1, 32):
                for kind, fn in serve.items():
                    fn(text=texts[:batch])  # warm
                    start = time.perf_counter()
                    for _ in range(5 if batch == 32 else 20):
                        fn(text=texts[:batch])
                    best[kind, batch] = min(best[kind, batch],
                                            (time.perf_counter() - start) / (5 if batch == 32 else 20))  # fmt: skip

    ratio = sizes["int8"] / sizes["float32"]
    print(f"\nMiniLM classifier ({'trained: ' + args.model if args.model else 'untrained head'}), "
          f"sequence length {args.sequence_length}")
    for kind in serve:
        print(f"  {kind:8s} variables/ {sizes[kind] / 2**20:6.1f} MiB   test accuracy {accuracy[kind]:.4f}   "
              f"latency batch 1 {best[kind, 1] * 1000:6.1f} ms, batch 32 {best[kind, 32] * 1000:7.1f} ms")
    print(f"  size int8 / float32: {ratio:.3f} (target <= 0.35: {'met' if ratio <= 0.35 else 'MISSED'})")
    print(f"  accuracy int8 - float32: {100 * (accuracy['int8'] - accuracy['float32']):+.2f} points "
          f"(target within 0.5: {'met' if abs(accuracy['int8'] - accuracy['float32']) <= 0.005 else 'MISSED'})")
    for batch in (1, 32):
        print(f"  latency int8 / float32 at batch {batch}: {best['int8', batch] / best['float32', batch]:.2f}")


if __name__ == "__main__":
    main()
