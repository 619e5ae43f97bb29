"""German to English translation with an encoder-decoder Transformer, on 15,000 sentence pairs.

Trains a small ``seq2seq`` model (2 encoder and 2 decoder pre-norm blocks of width 128,
4 heads, one shared lower-cased WordPiece vocabulary of 6,000 tokens with three-way tied
embeddings; Vaswani et al., 2017, scaled down) on the example sentences of the Ding
dictionary: 15,011 training pairs, 834 validation and 834 test pairs. It reports corpus
BLEU (keras-hub's, SacreBLEU's 13a tokenization, lower-cased) of cached greedy decoding on
the test pairs, and token perplexity on validation.

Measured here (12 epochs, 13 minutes on 2 idle CPU cores): validation perplexity 21.8 and
test BLEU 3.4 (5 epochs gave 33.8 and 0.0): 15k sentence pairs and minutes of CPU teach
common words and sentence shapes ("please don't do it !"), not translation (WMT systems
learn from millions of pairs for days); ``samples.json`` shows it honestly.
The export translates raw strings, tokenizer and decode loop inside the graph.

    python recipes/de_en_seq2seq.py              # or: bigkeras train de_en_seq2seq
    python recipes/de_en_seq2seq.py --smoke      # a few steps, for tests

Data: Debian's ``trans-de-en`` (``sudo apt-get install trans-de-en``).
"""

from bigkeras import recipe

# Setup
# ---------------------------------------------------------------------------------------
args = recipe.parse_args(__doc__, name="de_en_seq2seq", data="de_en", epochs=12, batch_size=64, learning_rate=1e-3)

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from bigkeras import data  # noqa: E402
from bigkeras.serving.seq2seq import (  # noqa: E402
    teacher_forcing_examples,
    translate_signatures,
    translate_texts,
)
from bigkeras.training import train  # noqa: E402

# Data
# ---------------------------------------------------------------------------------------
# One vocabulary for both languages (they share names, numbers and many word pieces), learned
# from a sample of the training pairs: keras-hub's WordPiece learner is slow pure Python.
pairs = recipe.load_data(args)
sample = np.concatenate([pairs.train.x[::4], pairs.train.y[::4]])
tokenizer = data.wordpiece_tokenizer(sample, vocabulary_size=6000)
START, END = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
TOKENS = {"source_length": 32, "target_length": 32, "start_token_id": START, "end_token_id": END}


def examples(split, shuffle=False):  # unbatched (features, labels, weights): weights mask padding
    return data.from_arrays(*teacher_forcing_examples(tokenizer, split.x, split.y, **TOKENS), shuffle=shuffle)


train_ds, val_ds = examples(pairs.train, shuffle=True), examples(pairs.validation)

# Model
# ---------------------------------------------------------------------------------------
model_kwargs = {
    "vocab_size": tokenizer.vocabulary_size(), "num_encoder_layers": 2, "num_decoder_layers": 2,
    "hidden_dim": 128, "num_heads": 4, "intermediate_dim": 512, "dropout": 0.1,
}

# Train
# ---------------------------------------------------------------------------------------
# The loss is weighted to skip padding (the examples' weights); perplexity skips id 0 too.
config = recipe.train_config(args, schedule="cosine", warmup_steps=300, weight_decay=0.01, clipnorm=1.0)
perplexity = keras_hub.metrics.Perplexity(from_logits=True, mask_token_id=0, name="perplexity")
result = train("transformer_base", train_ds, val_ds, config, model_kwargs=model_kwargs, metrics=[perplexity])

# Export
# ---------------------------------------------------------------------------------------
signatures = translate_signatures(result.model, tokenizer, examples=pairs.test.x[:4], **TOKENS)
translations = translate_texts(signatures["translate"], pairs.test.x, batch_size=200)
bleu = keras_hub.metrics.Bleu()
bleu.update_state([[t.lower()] for t in pairs.test.y], list(translations))  # (n, refs)
samples = [{"source": s, "reference": r, "translation": t}
           for s, r, t in zip(pairs.test.x[: recipe.SAMPLES], pairs.test.y, translations)]
val_perplexity = result.model.evaluate(data.batched(val_ds, 256), return_dict=True, verbose=0)["perplexity"]
recipe.publish(args, result, pairs, metric="test_bleu", value=float(bleu.result()), samples=samples,
               signatures=signatures, details={"validation_perplexity": round(val_perplexity, 3)})
