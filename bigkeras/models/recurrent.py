"""Recurrent networks: stacked LSTM or GRU, optionally bidirectional, over text or signals.

Text models embed integer ``token_ids`` with ``mask_zero=True``, so padding id 0 is skipped
by every recurrent layer (the state carries over padded steps) and by the loss of per-step
outputs. Signal models read float ``inputs`` of shape ``(steps, features)``.
"""

from __future__ import annotations

import keras
from keras import layers

from bigkeras import checks
from bigkeras.registry import register_family

PRESETS = {
    # keras.io "Bidirectional LSTM on IMDB": 20k words, 200 tokens, two BiLSTM(64) layers.
    "lstm_text": {
        "vocab_size": 20_000,
        "sequence_length": 200,
        "num_classes": 2,
        "cell": "lstm",
        "units": (64, 64),
        "bidirectional": True,
        "embedding_dim": 128,
    },
    "gru_text": {
        "vocab_size": 20_000,
        "sequence_length": 200,
        "num_classes": 2,
        "cell": "gru",
        "units": (64,),
        "bidirectional": True,
        "embedding_dim": 128,
        "dropout": 0.2,
    },
    # Sensor time series, e.g. UCI HAR: 128 steps of 9 channels, 6 activities.
    "lstm_sequence": {
        "input_shape": (128, 9),
        "num_classes": 6,
        "cell": "lstm",
        "units": (64, 64),
        "dropout": 0.2,
    },
    "tiny": {
        "vocab_size": 32,
        "sequence_length": 8,
        "num_classes": 3,
        "cell": "lstm",
        "units": (8,),
        "bidirectional": True,
        "embedding_dim": 8,
    },
}

_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU}


def recurrent(
    *,
    input_shape=None,
    vocab_size: int | None = None,
    num_classes: int,
    cell: str = "lstm",
    units=(128,),
    bidirectional: bool = False,
    embedding_dim: int = 128,
    sequence_length: int | None = None,
    return_sequences: bool = False,
    dropout: float = 0.0,
    name: str = "recurrent",
) -> keras.Model:
    """A stack of LSTM or GRU layers with a logits head, for text or float sequences.

    LSTM: Hochreiter & Schmidhuber, 1997. GRU: Cho et al., 2014
    (https://arxiv.org/abs/1406.1078). Bidirectional RNNs: Schuster & Paliwal, 1997.

    Give exactly one of ``vocab_size`` (text: int ``token_ids`` input, embedded, id 0 is
    padding) or ``input_shape`` (float ``inputs`` of shape ``(steps, features)``).

    Args:
        input_shape: tuple ``(steps, features)``, for float inputs; ``steps`` may be None.
        vocab_size: int, for text inputs: the number of token ids (0 is padding).
        num_classes: int, the width of the ``logits`` output.
        cell: str, ``"lstm"`` or ``"gru"``. Default ``"lstm"``.
        units: sequence of int, the width of each recurrent layer, bottom first.
            Default ``(128,)``. A bidirectional layer outputs twice its width.
        bidirectional: bool, read each sequence both ways and concatenate. Default False.
        embedding_dim: int, the token embedding width (text only). Default 128.
        sequence_length: int or None, the token sequence length (text only); None for
            variable length. Default None.
        return_sequences: bool, logits for every step (sequence tagging) instead of one
            per sequence. Default False.
        dropout: float in [0, 1), dropout after each recurrent layer. Default 0.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``token_ids`` (batch, sequence_length) int32
        or ``inputs`` (batch, steps, features) float32 to logits of shape
        ``(batch, num_classes)``, or ``(batch, steps, num_classes)`` with
        ``return_sequences``.

    Example:
        >>> model = recurrent(vocab_size=20_000, sequence_length=200, num_classes=2,
        ...                   units=(64, 64), bidirectional=True)
    """
    if (vocab_size is None) == (input_shape is None):
        raise ValueError(
            "Give exactly one of `vocab_size` (text) or `input_shape` (float sequences), "
            f"got vocab_size={vocab_size!r} and input_shape={input_shape!r}."
        )
    checks.positive_int("num_classes", num_classes)
    rnn = _CELLS[checks.one_of("cell", cell, _CELLS)]
    units = checks.positive_ints("units", units)
    checks.fraction("dropout", dropout)

    if vocab_size is not None:
        checks.positive_int("vocab_size", vocab_size)
        checks.positive_int("embedding_dim", embedding_dim)
        if sequence_length is not None:
            checks.positive_int("sequence_length", sequence_length)
        inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
        # mask_zero: the Keras mask flows through the recurrent layers and skips padding.
        x = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name=f"{name}_embedding")(inputs)
    else:
        input_shape = checks.shape("input_shape", input_shape, rank=2, channels=True)
        inputs = keras.Input(shape=input_shape, name="inputs")
        x = inputs

    for i, width in enumerate(units):
        last = i == len(units) - 1
        layer = rnn(width, return_sequences=return_sequences or not last, name=f"{name}_{cell}{i}")
        if bidirectional:
            layer = layers.Bidirectional(layer, name=f"{name}_bi{cell}{i}")
        x = layer(x)  # (batch, steps, width) or, for the last layer, (batch, width)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_{cell}{i}_dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


register_family("recurrent", recurrent, PRESETS)
