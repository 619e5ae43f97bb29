"""Transformer-encoder classifier: variants, padding invariance, parameter count, errors."""

import numpy as np
import pytest

from bigkeras import build
from bigkeras.models.transformer import transformer_classifier
from tests.helpers import assert_close, check_model

TINY = {"vocab_size": 32, "num_classes": 3, "hidden_dim": 16, "num_layers": 2, "num_heads": 2,
        "intermediate_dim": 32, "dropout": 0.0}


def test_post_norm_first_token_variant_passes_shared_checks():
    args = {**TINY, "num_layers": 1, "dropout": 0.1, "norm_first": False, "pooling": "first"}
    model = transformer_classifier(**args, sequence_length=8)
    check_model(model, vocab_size=32, expected_output_shape=(3,))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_appended_padding_changes_nothing(norm_first, pooling):
    args = {**TINY, "norm_first": norm_first, "pooling": pooling}
    short = transformer_classifier(**args, sequence_length=5)
    long = transformer_classifier(**args, sequence_length=9)
    # Same weights; the longer model's extra position rows only ever meet padding.
    for s, w in zip(short.weights, long.weights, strict=True):
        value = s.numpy()
        if s.shape != w.shape:  # the position table: (5, hidden) into (9, hidden)
            value = np.concatenate([value, w.numpy()[value.shape[0]:]])
        w.assign(value)
    ids = np.array([[3, 7, 1, 9, 2], [5, 5, 8, 0, 0]], "int32")  # row 2 already ends in padding
    assert_close(long(np.pad(ids, ((0, 0), (0, 4)))), short(ids), atol=1e-5)


def test_an_empty_text_gets_finite_logits():
    model = build("transformer_tiny")
    logits = np.asarray(model(np.zeros((1, 8), "int32")))
    assert np.isfinite(logits).all()


def test_transformer_text_parameter_count():
    v, l, h, i, c, n = 20_000, 200, 128, 512, 2, 2
    embeddings = v * h + l * h
    block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h  # attention, FFN, two norms
    expected = embeddings + n * block + 2 * h + (h * c + c)  # + final norm + logits
    model = build("transformer_text")
    assert model.count_params() == expected
    assert model.input.name == "token_ids"
    assert model.input.shape == (None, 200)


def test_layers_have_stable_names():
    model = transformer_classifier(**TINY, sequence_length=8, name="clf")
    names = {layer.name for layer in model.layers}
    assert {"token_ids", "clf_embedding", "clf_block0", "clf_block1", "clf_final_norm", "clf_mean_pool",
            "logits"} <= names


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_dim": 10, "num_heads": 4}, "hidden_dim` must be divisible by `num_heads"),
        ({"pooling": "max"}, "pooling"),
        ({"sequence_length": 0}, "sequence_length"),
        ({"num_layers": -1}, "num_layers"),
        ({"vocab_size": 2.5}, "vocab_size"),
        ({"intermediate_dim": 0}, "intermediate_dim"),
        ({"dropout": 1}, "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        transformer_classifier(**{**TINY, "sequence_length": 8, **kwargs})
