"""The shared Transformer layers: configs, saving, masking, and parity with keras_hub."""

import inspect
import os

import keras
import keras_hub
import numpy as np
import pytest

from bigkeras.layers import MaskedMeanPooling, TokenAndPositionEmbedding, TransformerEncoderBlock
from tests.helpers import assert_close

BLOCK = {"hidden_dim": 16, "num_heads": 4, "intermediate_dim": 32}
# Our sub-layer names -> keras_hub.layers.TransformerEncoder's, for copying weights across.
TO_HUB = {
    "self_attention/": "self_attention_layer/",
    "self_attention_norm/": "self_attention_layer_norm/",
    "ffn_norm/": "feedforward_layer_norm/",
    "ffn_intermediate/": "feedforward_intermediate_dense/",
    "ffn_output/": "feedforward_output_dense/",
}


def _random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (TokenAndPositionEmbedding, {"vocab_size": 11, "sequence_length": 7, "hidden_dim": 6,
                                     "embeddings_initializer": "he_normal"}),
        (TransformerEncoderBlock, {**BLOCK, "dropout": 0.1, "activation": "relu", "norm_first": False,
                                   "layer_norm_epsilon": 1e-6}),
    ],
    ids=lambda p: p.__name__ if isinstance(p, type) else "",
)
def test_config_is_the_constructor_arguments(cls, kwargs):
    config = cls(**kwargs, name="layer").get_config()
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert set(config) - {"name", "trainable", "dtype"} == accepted
    assert config["name"] == "layer"
    assert {k: config[k] for k in kwargs if k != "embeddings_initializer"} == {
        k: v for k, v in kwargs.items() if k != "embeddings_initializer"
    }
    clone = cls.from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("hidden_dim, num_heads, intermediate_dim", [(768, 12, 3072), (16, 4, 32)])
def test_block_parameter_count_matches_keras_hub(hidden_dim, num_heads, intermediate_dim):
    ours = TransformerEncoderBlock(
        hidden_dim=hidden_dim, num_heads=num_heads, intermediate_dim=intermediate_dim
    )
    hub = keras_hub.layers.TransformerEncoder(intermediate_dim=intermediate_dim, num_heads=num_heads)
    ours.build((None, None, hidden_dim))
    hub.build((None, None, hidden_dim))
    assert ours.count_params() == hub.count_params()
    if hidden_dim == 768:  # the BERT-base block
        assert ours.count_params() == 7_087_872


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_keras_hub_outputs_with_the_same_weights(norm_first):
    ours = TransformerEncoderBlock(**BLOCK, norm_first=norm_first)
    hub = keras_hub.layers.TransformerEncoder(
        intermediate_dim=BLOCK["intermediate_dim"], num_heads=BLOCK["num_heads"], activation="gelu",
        normalize_first=norm_first,
    )
    x = _random(2, 5, BLOCK["hidden_dim"])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    ours(x, padding_mask=mask)
    hub(x, padding_mask=mask)

    hub_weights = {_inner_path(w): w for w in hub.weights}
    for w in ours.weights:
        path = _inner_path(w)
        for mine, theirs in TO_HUB.items():
            path = path.replace(mine, theirs) if path.startswith(mine) else path
        hub_weights.pop(path).assign(w)
    assert not hub_weights, f"keras_hub weights with no counterpart: {sorted(hub_weights)}"
    assert_close(ours(x, padding_mask=mask), hub(x, padding_mask=mask), atol=1e-5)


def _inner_path(weight):
    # "transformer_encoder_block_3/ffn_output/kernel" -> "ffn_output/kernel"
    return weight.path.split("/", 1)[1]


@pytest.mark.parametrize("norm_first", [True, False])
def test_appended_padding_leaves_real_positions_unchanged(norm_first):
    block = TransformerEncoderBlock(**BLOCK, norm_first=norm_first)
    real = _random(2, 5, 16, seed=1)
    padded = np.concatenate([real, _random(2, 3, 16, seed=2)], axis=1)  # garbage in the padding
    mask = np.array([[1] * 5 + [0] * 3] * 2, bool)
    expected = block(real, padding_mask=np.ones((2, 5), bool))
    assert_close(block(padded, padding_mask=mask)[:, :5], expected, atol=1e-5)
    # Without the mask the padding leaks into the real positions: the check above can fail.
    assert not np.allclose(block(padded)[:, :5], expected, atol=1e-3)


def test_block_saves_and_loads_in_a_keras_file(tmp_path):
    token_ids = keras.Input((6,), dtype="int32", name="token_ids")
    x = TokenAndPositionEmbedding(vocab_size=20, sequence_length=6, hidden_dim=16)(token_ids)
    x = TransformerEncoderBlock(**BLOCK, dropout=0.1)(x, padding_mask=keras.ops.not_equal(token_ids, 0))
    x = MaskedMeanPooling()(x, padding_mask=keras.ops.not_equal(token_ids, 0))
    model = keras.Model(token_ids, x)
    ids = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]], "int32")

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the layers are registered
    assert_close(loaded(ids), model(ids))


def test_embedding_adds_the_position_table():
    embed = TokenAndPositionEmbedding(vocab_size=10, sequence_length=6, hidden_dim=4)
    ids = np.array([[1, 2, 3], [9, 0, 4]], "int32")
    outputs = embed(ids)
    tokens = embed.token_embedding.embeddings.numpy()
    positions = embed.position_embedding.embeddings.numpy()
    assert_close(outputs, tokens[ids] + positions[None, :3])
    # Cached decoding feeds one token at position start_index.
    assert_close(embed(ids[:, :1], start_index=4), tokens[ids[:, :1]] + positions[None, 4:5])
    # The two tables start from different draws of the initializer.
    assert not np.allclose(tokens[:6], positions)


def test_embedding_rejects_sequences_longer_than_its_table():
    embed = TokenAndPositionEmbedding(vocab_size=10, sequence_length=4, hidden_dim=2)
    with pytest.raises(ValueError, match="sequence_length"):
        embed(np.zeros((1, 5), "int32"))


def test_masked_mean_pooling_skips_padding_and_survives_empty_rows():
    x = _random(2, 4, 3)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    pooled = np.asarray(MaskedMeanPooling()(x, padding_mask=mask))
    assert_close(pooled[0], x[0, :2].mean(axis=0))
    assert_close(pooled[1], np.zeros(3))  # an empty text pools to zeros, not NaN
    assert_close(MaskedMeanPooling()(x), x.mean(axis=1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_dim": 10, "num_heads": 4}, "hidden_dim` must be divisible by `num_heads"),
        ({"num_heads": 0}, "num_heads"),
        ({"intermediate_dim": -1}, "intermediate_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
    ],
)
def test_block_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerEncoderBlock(**{**BLOCK, **kwargs})


def test_block_rejects_inputs_of_another_width():
    with pytest.raises(ValueError, match="hidden_dim"):
        TransformerEncoderBlock(**BLOCK)(_random(1, 3, 8))


def test_embedding_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="vocab_size"):
        TokenAndPositionEmbedding(vocab_size=0, sequence_length=4, hidden_dim=2)


def test_layers_compute_in_bfloat16_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        embed = TokenAndPositionEmbedding(vocab_size=10, sequence_length=4, hidden_dim=16)
        block = TransformerEncoderBlock(**BLOCK)
        ids = np.array([[1, 2, 0, 0], [0, 0, 0, 0]], "int32")
        mask = ids != 0
        pooled = MaskedMeanPooling()(block(embed(ids), padding_mask=mask), padding_mask=mask)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.backend.standardize_dtype(pooled.dtype) == "bfloat16"
    assert {w.dtype for w in embed.weights + block.weights} == {"float32"}  # variables stay fp32
    assert np.isfinite(np.asarray(pooled, "float32")).all()
