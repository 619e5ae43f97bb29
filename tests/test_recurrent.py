"""Recurrent family: text and float inputs, cells, directions, masking, presets, errors."""

import keras
import numpy as np
import pytest

from bigkeras import build
from bigkeras.models.recurrent import recurrent
from tests.helpers import assert_close, check_model

TEXT = {"vocab_size": 32, "num_classes": 3, "units": (8,), "embedding_dim": 8}
SIGNAL = {"input_shape": (None, 5), "num_classes": 4, "units": (8, 6)}


@pytest.mark.parametrize(
    "kwargs, expected_shape",
    [
        # GRU tagger: one set of logits per step; padded steps are left out of the loss.
        ({**TEXT, "cell": "gru", "sequence_length": 6, "return_sequences": True}, (6, 3)),
        # Float sequences of any length through two stacked LSTMs.
        ({**SIGNAL, "dropout": 0.1}, (4,)),
    ],
    ids=["gru_tagger", "lstm_signal"],
)
def test_variants_pass_shared_checks(kwargs, expected_shape):
    check_model(recurrent(**kwargs), vocab_size=32, expected_output_shape=expected_shape)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_output_and_hidden_shapes(cell, bidirectional, return_sequences):
    model = recurrent(
        input_shape=(7, 5), num_classes=4, cell=cell, units=(6, 3),
        bidirectional=bidirectional, return_sequences=return_sequences,
    )
    assert model.input.name == "inputs"
    assert model.output.shape == ((None, 7, 4) if return_sequences else (None, 4))
    # A bidirectional layer concatenates both directions: twice the width.
    last = model.get_layer(f"recurrent_bi{cell}1" if bidirectional else f"recurrent_{cell}1")
    assert last.output.shape[-1] == 3 * (2 if bidirectional else 1)
    assert model.get_layer("logits").input.shape[-1] == 3 * (2 if bidirectional else 1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_appended_padding_changes_nothing(bidirectional, return_sequences):
    args = {**TEXT, "bidirectional": bidirectional, "return_sequences": return_sequences, "units": (8, 4)}
    short = recurrent(**args, sequence_length=5)
    long = recurrent(**args, sequence_length=9)
    long.set_weights(short.get_weights())  # sequence_length does not change any weight
    ids = np.array([[3, 7, 1, 9, 2], [5, 5, 8, 0, 0]], "int32")  # row 2 already ends in padding
    padded = np.pad(ids, ((0, 0), (0, 4)))

    expected = np.asarray(short(ids))
    got = np.asarray(long(padded))
    if return_sequences:
        got = got[:, :5]
    assert_close(got, expected, atol=1e-5)


def test_tagger_loss_ignores_padded_steps():
    model = recurrent(**TEXT, sequence_length=5, return_sequences=True)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.array([[3, 7, 1, 0, 0], [5, 5, 8, 9, 0]], "int32")
    tags = np.array([[0, 1, 2, 0, 0], [2, 1, 0, 1, 0]])
    other_padding = np.where(ids == 0, 2, tags)  # differs from `tags` at padded steps only
    other_real = np.where(ids == 0, tags, (tags + 1) % 3)  # differs at every real step
    loss = model.test_on_batch(ids, tags)
    assert model.test_on_batch(ids, other_padding) == pytest.approx(loss, rel=1e-6)
    assert model.test_on_batch(ids, other_real) != pytest.approx(loss, rel=1e-5)


def test_lstm_text_matches_the_keras_io_reference():
    # keras.io "Bidirectional LSTM on IMDB" (Embedding(20000, 128), 2x BiLSTM(64),
    # Dense(1)) reports 2,757,761 parameters.
    assert build("lstm_text", num_classes=1).count_params() == 2_757_761


def test_text_presets_take_token_ids():
    for name in ("lstm_text", "gru_text"):
        model = build(name)
        assert model.input.name == "token_ids"
        assert model.input.shape == (None, 200)
        assert "int" in model.input.dtype
        assert model.output.shape == (None, 2)
    assert build("lstm_sequence").input.shape == (None, 128, 9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cell": "rnn"}, "cell"),
        ({"units": (8, -2)}, r"units\[1\]"),
        ({"units": ()}, "units"),
        ({"num_classes": 0}, "num_classes"),
        ({"dropout": -0.1}, "dropout"),
        ({"sequence_length": 0}, "sequence_length"),
        ({"vocab_size": None, "input_shape": (5,)}, "input_shape"),  # rank 1, not (steps, features)
        ({"vocab_size": None, "input_shape": (5, None)}, r"input_shape\[1\]"),  # features must be fixed
        ({"input_shape": (5, 3)}, "exactly one of `vocab_size`"),
        ({"vocab_size": None}, "exactly one of `vocab_size`"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recurrent(**{**TEXT, **kwargs})
