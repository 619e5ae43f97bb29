"""Transformer-encoder text classifiers: embed, encode, pool, classify.

Padding id 0 is masked everywhere: attention never looks at padded positions and mean
pooling skips them, so a text's logits do not depend on how much padding follows it.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers import MaskedMeanPooling, TokenAndPositionEmbedding, TransformerEncoderBlock
from bigkeras.registry import register_family

PRESETS = {
    # Review sentiment (IMDB-like: 20k words, 200 tokens) small enough to train on 2 CPU cores.
    "transformer_text": {
        "vocab_size": 20_000,
        "sequence_length": 200,
        "num_classes": 2,
        "hidden_dim": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_dim": 512,
        "dropout": 0.1,
    },
    "tiny": {
        "vocab_size": 32,
        "sequence_length": 8,
        "num_classes": 3,
        "hidden_dim": 16,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_dim": 32,
        "dropout": 0.0,
    },
}


def transformer_classifier(
    *,
    vocab_size: int,
    sequence_length: int,
    num_classes: int,
    hidden_dim: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_dim: int = 1024,
    dropout: float = 0.1,
    norm_first: bool = True,
    pooling: str = "mean",
    name: str = "transformer",
) -> keras.Model:
    """A Transformer-encoder sequence classifier.

    Vaswani et al., 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762):
    token and learned position embeddings, ``num_layers`` encoder blocks (pre-norm by
    default, closed by a final layer norm), pooling over the sequence, dropout, logits.

    Args:
        vocab_size: int, the number of token ids; id 0 is padding.
        sequence_length: int, the input length (and the position table's size).
        num_classes: int, the width of the ``logits`` output.
        hidden_dim: int, the model width; divisible by ``num_heads``. Default 256.
        num_layers: int, the encoder blocks. Default 4.
        num_heads: int, the attention heads per block. Default 4.
        intermediate_dim: int, the feed-forward width. Default 1024.
        dropout: float in [0, 1), in the embeddings, the blocks and before the logits.
            Default 0.1.
        norm_first: bool, pre-norm (True, default) or post-norm blocks (BERT/Vaswani).
        pooling: str, ``"mean"`` over the real tokens (default) or ``"first"`` (the
            first token's output, for inputs that start with a ``[CLS]``-like token).
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``token_ids`` (batch, sequence_length) int32
        to logits (batch, num_classes).

    Example:
        >>> model = transformer_classifier(vocab_size=20_000, sequence_length=200,
        ...                                num_classes=2, hidden_dim=128, num_layers=2)
    """
    checks.positive_int("vocab_size", vocab_size)
    checks.positive_int("sequence_length", sequence_length)
    checks.positive_int("num_classes", num_classes)
    checks.positive_int("num_layers", num_layers)
    checks.fraction("dropout", dropout)
    checks.one_of("pooling", pooling, ("mean", "first"))
    # hidden_dim, num_heads and intermediate_dim are checked by the layers themselves.

    token_ids = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
    padding_mask = ops.not_equal(token_ids, 0)  # (batch, seq) bool, True for real tokens

    x = TokenAndPositionEmbedding(
        vocab_size=vocab_size,
        sequence_length=sequence_length,
        hidden_dim=hidden_dim,
        name=f"{name}_embedding",
    )(token_ids)  # (batch, seq, hidden)
    if not norm_first:
        # Post-norm blocks expect normalised inputs (BERT normalises its embeddings).
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_embedding_norm")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_embedding_dropout")(x)
    for i in range(num_layers):
        x = TransformerEncoderBlock(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            norm_first=norm_first,
            name=f"{name}_block{i}",
        )(x, padding_mask=padding_mask)
    if norm_first:
        # Pre-norm leaves the residual stream unnormalised; normalise it once at the end.
        x = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_final_norm")(x)

    if pooling == "mean":
        x = MaskedMeanPooling(name=f"{name}_mean_pool")(x, padding_mask=padding_mask)
    else:
        x = x[:, 0, :]  # (batch, hidden): the first token's output
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_head_dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(token_ids, logits, name=name)


register_family("transformer", transformer_classifier, PRESETS)
