"""Tokens per second of greedy generation: bigkeras cached vs naive recomputation vs keras-hub.

One 4-layer, 256-wide GPT shape (vocab 1,000, 4 heads, FFN 1,024), untrained; a 16-token
prompt, 64 new tokens, batch 1 and 8. The contenders, each compiled by a warm-up call, then
timed in turns (every repeat times each once, so a slow spell of a shared machine hits all
of them) and reported by their best time:

- ``bigkeras``: ``make_generate_fn`` (key/value cache, one ``tf.while_loop``, XLA: the default);
- ``bigkeras no-XLA``: the same with ``jit_compile=False``, as exported for TF Serving;
- ``naive``: ``use_cache=False`` (the whole sequence every step), XLA like the default;
- ``keras-hub``: ``GPT2CausalLM.generate`` on token ids (``preprocessor=None``), greedy, with
  its default ``jit_compile`` (XLA) and with XLA off.

Run: ``.venv/bin/python bench/generation.py [--repeats 5]``
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from bigkeras.generation import make_generate_fn  # noqa: E402
from bigkeras.models.gpt import gpt  # noqa: E402

SHAPE = {"num_layers": 4, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 1024}
VOCAB, PROMPT, NEW = 1000, 16, 64


def best_times(contenders, repeats):
    """Best wall time of each callable, timed in turns after one warm-up call each."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    ours = gpt(vocab_size=VOCAB, sequence_length=PROMPT + NEW, **SHAPE)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, max_sequence_length=PROMPT + NEW, **SHAPE
    )
    print(f"params: bigkeras {ours.count_params():,}  keras-hub {backbone.count_params():,}")

    ours_xla = make_generate_fn(ours, max_length=PROMPT + NEW)
    ours_executor = make_generate_fn(ours, max_length=PROMPT + NEW, jit_compile=False)
    naive = make_generate_fn(ours, max_length=PROMPT + NEW, use_cache=False)
    hub_xla = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    hub_xla.compile(sampler="greedy", jit_compile=True)
    hub_executor = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    hub_executor.compile(sampler="greedy", jit_compile=False)
    rows = []
    for batch in (1, 8):
        prompt = np.random.default_rng(batch).integers(1, VOCAB, size=(batch, PROMPT)).astype("int32")
        mask = np.ones_like(prompt)
        # keras-hub takes right-padded fixed-length inputs: the prompt, then room to fill.
        hub_inputs = {
            "token_ids": np.pad(prompt, ((0, 0), (0, NEW))),
            "padding_mask": np.pad(mask, ((0, 0), (0, NEW))).astype(bool),
        }
        timings = best_times({
            "bigkeras cached": lambda: ours_xla(prompt, mask)["token_ids"].numpy(),
            "bigkeras no-XLA": lambda: ours_executor(prompt, mask)["token_ids"].numpy(),
            "naive recompute": lambda: naive(prompt, mask)["token_ids"].numpy(),
            "keras-hub xla=on": lambda: hub_xla.generate(hub_inputs, stop_token_ids=None),
            "keras-hub xla=off": lambda: hub_executor.generate(hub_inputs, stop_token_ids=None),
        }, args.repeats)
        rows.append((batch, {name: batch * NEW / t for name, t in timings.items()}))

    for batch, speeds in rows:
        print(f"\nbatch {batch}, {NEW} new tokens (tokens/s, and bigkeras cached speedup)")
        base = speeds["bigkeras cached"]
        for name, tps in speeds.items():
            print(f"  {name:<18} {tps:9.1f} tok/s   cached is {base / tps:5.2f}x")


if __name__ == "__main__":
    main()
