"""Date normalisation with an encoder-decoder Transformer: "mercredi 4 mars 1998" -> "1998-03-04".

Trains a small ``seq2seq`` model (2 encoder and 2 decoder pre-norm blocks of width 128,
4 heads, tied byte embeddings) to rewrite human-readable dates, rendered by Babel in eight
locales and five formats, as ISO 8601 dates. Source and target are UTF-8 bytes (keras-hub's
``ByteTokenizer``; ASCII STX and ETX serve as start and end tokens). The 2,000 test dates
fall on days that never occur in training, in any rendering, so the score measures
generalisation, not recall. It reports exact match of cached greedy decoding on them.

Measured: 99.9% exact match (the target is 99%) from 6 epochs in 7 min 24 s on 2 CPU cores.
The export takes raw strings: ``{"source": ["4. März 1998"]}`` -> ``{"translation": [...]}``,
with tokenizing and decoding inside the graph.

    python recipes/dates_seq2seq.py                  # or: bigkeras train dates_seq2seq
    python recipes/dates_seq2seq.py --smoke          # a few steps, for tests

Data: generated offline by ``bigkeras.data.load("dates")`` (Babel's CLDR data).
"""

from bigkeras import recipe

# Setup
# ---------------------------------------------------------------------------------------
args = recipe.parse_args(
    __doc__, name="dates_seq2seq", data="dates", epochs=6, batch_size=32, learning_rate=1e-3
)

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from bigkeras import data  # noqa: E402
from bigkeras.serving.seq2seq import (  # noqa: E402
    teacher_forcing_examples,
    translate_signatures,
    translate_texts,
)
from bigkeras.training import train  # noqa: E402

# Bytes 2 and 3 (ASCII "start/end of text") never occur in a date: free special tokens.
TOKENS = {"source_length": 40, "target_length": 11, "start_token_id": 2, "end_token_id": 3}

# Data
# ---------------------------------------------------------------------------------------
# The longest rendering is 38 bytes; an ISO date is 10 bytes, plus the end token.
dates = recipe.load_data(args)
tokenizer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)  # core TF ops only: no TF Text


def examples(split, shuffle=False):  # unbatched (features, labels, weights) for train()
    return data.from_arrays(*teacher_forcing_examples(tokenizer, split.x, split.y, **TOKENS), shuffle=shuffle)


train_ds, val_ds = examples(dates.train, shuffle=True), examples(dates.validation)

# Model
# ---------------------------------------------------------------------------------------
# The Transformer-base family scaled down: the task has a 256-byte vocabulary and short inputs.
model_kwargs = {
    "vocab_size": tokenizer.vocabulary_size(), "num_encoder_layers": 2, "num_decoder_layers": 2,
    "hidden_dim": 128, "num_heads": 4, "intermediate_dim": 256, "dropout": 0.0,
}

# Train
# ---------------------------------------------------------------------------------------
config = recipe.train_config(args, schedule="cosine", warmup_steps=200, weight_decay=0.01)
result = train("transformer_base", train_ds, val_ds, config, model_kwargs=model_kwargs)

# Export
# ---------------------------------------------------------------------------------------
# The held-out score runs the serving signature itself: what is measured is what is served.
signatures = translate_signatures(result.model, tokenizer, examples=dates.test.x[:4], **TOKENS)
predicted = translate_texts(signatures["translate"], dates.test.x, batch_size=500)
exact = float(np.mean(predicted == dates.test.y.astype(str)))
samples = [{"source": s, "target": t, "prediction": p, "correct": bool(p == t)}
           for s, t, p in zip(dates.test.x[: recipe.SAMPLES], dates.test.y, predicted)]
recipe.publish(args, result, dates, metric="test_exact_match", value=exact, samples=samples,
               signatures=signatures, details={"test_examples": len(dates.test)})
