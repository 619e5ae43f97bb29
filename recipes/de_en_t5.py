"""German to English translation with T5 through its text-to-text interface, on 15,000 sentence pairs.

Trains a small ``t5`` model from scratch with the same budget as ``de_en_seq2seq`` (2 encoder
and 2 decoder blocks of width 128, 4 heads, feed-forward 512, dropout 0.1), here with T5's
parts: relative position buckets instead of learned positions, RMS norm, no biases, the T5 1.0
tied and rescaled output projection, and every source prefixed with the task ("translate
German to English: "), as T5 frames every task. Text is cut into pieces by one SentencePiece
model (8,000 pieces at most, case kept) trained on both sides of the training pairs of the
Ding dictionary (15,011 training pairs, 834 validation and 834 test pairs, the split of
``de_en_seq2seq``). It trains with Adafactor, as T5 does. It reports corpus BLEU (keras-hub's, SacreBLEU's 13a tokenization,
lower-cased as ``de_en_seq2seq`` scores it) of cached greedy decoding on the test pairs, and
token perplexity on validation.

Measured here (12 epochs, 7 min 48 s on 2 CPU cores): test BLEU 7.5, twice ``de_en_seq2seq``'s
3.4 on the same test pairs and budget, and validation perplexity 39.6 per piece (best 36.8 at
epoch 7: it overfits after; not comparable with ``de_en_seq2seq``'s 21.8 per lower-cased
WordPiece token). Still far from translation: short sentences come out right ("It was pretty
cold."), long ones do not (``samples.json``).
The export translates raw strings: ``{"source": ["translate German to English: Der Hund
schläft."]}`` -> ``{"translation": [...]}``, SentencePiece (TF Text ops) and decoding inside
the graph.

    python recipes/de_en_t5.py                   # or: bigkeras train de_en_t5
    python recipes/de_en_t5.py --smoke           # a few steps, for tests

Data: Debian's ``trans-de-en`` (``sudo apt-get install trans-de-en``).
"""

from bigkeras import recipe

# Setup
# ---------------------------------------------------------------------------------------
args = recipe.parse_args(__doc__, name="de_en_t5", data="de_en", epochs=12, batch_size=64, learning_rate=3e-2)

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from bigkeras import data  # noqa: E402
from bigkeras.serving.seq2seq import (  # noqa: E402
    teacher_forcing_examples,
    translate_signatures,
    translate_texts,
)
from bigkeras.training import train  # noqa: E402

PREFIX = "translate German to English: "  # the text-to-text task prefix
# The prefix is a handful of pieces; 32 more cover all but the longest dictionary sentences.
TOKENS = {"source_length": 40, "target_length": 32, "start_token_id": 0, "end_token_id": 1}

# Data
# ---------------------------------------------------------------------------------------
pairs = recipe.load_data(args)
prompts = {split: np.array([PREFIX + str(x) for x in getattr(pairs, split).x], dtype=object)
           for split in ("train", "validation", "test")}
tokenizer = data.sentencepiece_tokenizer([*pairs.train.x, *pairs.train.y, PREFIX], vocabulary_size=8000)


def examples(split, shuffle=False):  # unbatched (features, labels, weights): weights mask padding
    pieces = teacher_forcing_examples(tokenizer, prompts[split], getattr(pairs, split).y, **TOKENS)
    return data.from_arrays(*pieces, shuffle=shuffle)


train_ds, val_ds = examples("train", shuffle=True), examples("validation")

# Model
# ---------------------------------------------------------------------------------------
model_kwargs = {
    "vocab_size": tokenizer.vocabulary_size(), "num_encoder_layers": 2, "num_decoder_layers": 2,
    "hidden_dim": 128, "num_heads": 4, "key_value_dim": 32, "intermediate_dim": 512, "dropout": 0.1,
}

# Train
# ---------------------------------------------------------------------------------------
# Adafactor, as T5 trains: it scales each step by the weight's RMS, so the unit-variance
# embeddings learn as fast as the small kernels (3 epochs: validation perplexity 66 against
# AdamW's 213 at 1e-3 and 148 at 3e-3). The loss is weighted to skip padding (the examples'
# weights); perplexity skips id 0 too.
config = recipe.train_config(args, optimizer="adafactor", schedule="cosine", warmup_steps=300, weight_decay=0.01,
                             clipnorm=1.0)
perplexity = keras_hub.metrics.Perplexity(from_logits=True, mask_token_id=0, name="perplexity")
result = train("t5_tiny", train_ds, val_ds, config, model_kwargs=model_kwargs, metrics=[perplexity])

# Export
# ---------------------------------------------------------------------------------------
# The held-out score runs the serving signature itself: what is measured is what is served.
signatures = translate_signatures(result.model, tokenizer, examples=prompts["test"][:4], **TOKENS)
translations = translate_texts(signatures["translate"], prompts["test"], batch_size=200)
bleu = keras_hub.metrics.Bleu()
bleu.update_state([[t.lower()] for t in pairs.test.y], [t.lower() for t in translations])  # (n, refs)
samples = [{"source": s, "reference": r, "translation": t}
           for s, r, t in zip(prompts["test"][: recipe.SAMPLES], pairs.test.y, translations)]
val_perplexity = result.model.evaluate(data.batched(val_ds, 256), return_dict=True, verbose=0)["perplexity"]
recipe.publish(args, result, pairs, metric="test_bleu", value=float(bleu.result()), samples=samples,
               signatures=signatures, details={"validation_perplexity": round(val_perplexity, 3),
                                               "pieces": tokenizer.vocabulary_size()})
