"""GPT: the GPT-2 small shape against keras-hub, learning, and cached generation."""

import keras
import keras_hub
import numpy as np
import pytest

from bigkeras import build
from bigkeras.generation import generate, left_pad, make_generate_fn
from bigkeras.models.gpt import PRESETS, CachedGPT, gpt

VOCAB = PRESETS["tiny"]["vocab_size"]


def _stride_sequences(n, length, seed):
    """Counting sequences mod 16 with a per-row stride in {1, 2, 3}: ids 1..16."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 16, size=(n, 1))
    stride = rng.integers(1, 4, size=(n, 1))
    return ((start + stride * np.arange(length)) % 16 + 1).astype("int32")


@pytest.fixture(scope="module")
def trained():
    """The tiny preset trained on the stride task; returns (model, first loss, last loss)."""
    keras.utils.set_random_seed(0)
    model = build("gpt_tiny")
    seq = _stride_sequences(4096, 17, seed=0)
    x = {"token_ids": seq[:, :-1], "padding_mask": np.ones_like(seq[:, :-1])}
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, seq[:, 1:], batch_size=32, epochs=2, verbose=0)  # 256 steps
    first = model.evaluate({k: v[:256] for k, v in x.items()}, seq[:256, 1:], verbose=0)
    return model, history.history["loss"], first


def test_gpt2_small_matches_keras_hub_parameter_count():
    ours = build("gpt2_small")
    reference = keras_hub.models.GPT2Backbone(
        vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
        intermediate_dim=3072, max_sequence_length=1024,
    )
    assert ours.count_params() == reference.count_params() == 124_439_808


def test_tiny_gpt_learns_the_stride_task(trained):
    model, losses, final = trained
    initial = np.log(VOCAB)  # an untrained model predicts about uniformly
    assert final < 0.2 * initial, (losses, final)


def test_cached_greedy_equals_full_recomputation_on_left_padded_batch(trained):
    model, _, _ = trained
    prompts = [list(_stride_sequences(1, n, seed=n)[0]) for n in (5, 2, 8, 1)]
    ids, mask = left_pad(prompts)
    cached = make_generate_fn(model, max_length=20)(ids, mask)
    full = make_generate_fn(model, max_length=20, use_cache=False)(ids, mask)
    np.testing.assert_array_equal(cached["token_ids"].numpy(), full["token_ids"].numpy())
    expected_mask = np.concatenate([mask.astype(bool), np.ones((4, 12), bool)], axis=1)
    np.testing.assert_array_equal(cached["padding_mask"].numpy(), expected_mask)
    # Left padding does not change a row's continuation: each prompt alone gives the same.
    fn = make_generate_fn(model, max_length=20)  # one trace serves every prompt length
    for row, prompt in enumerate(prompts):
        alone = fn(*left_pad([prompt]))["token_ids"].numpy()[0, : len(prompt) + 12]
        np.testing.assert_array_equal(alone, cached["token_ids"].numpy()[row, 8 - len(prompt):])


def test_generation_continues_the_learned_pattern(trained):
    model, _, _ = trained
    seq = _stride_sequences(8, 16, seed=7)
    out = generate(model, seq[:, :6], 10)["token_ids"]
    assert (out[:, 6:] == seq[:, 6:]).mean() > 0.9


def test_stop_token_ends_the_row_and_masks_what_follows(trained):
    model, _, _ = trained
    # From 1 with stride 1 the model counts 2, 3, 4, ...: stop at 4.
    out = generate(model, [[1, 2, 3], [9, 10]], 8, stop_token_ids=[4])
    tokens, valid = out["token_ids"], out["padding_mask"]
    assert tokens[0, 3] == 4 and valid[0, 3] and not valid[0, 4:].any()
    assert (tokens[0, 4:] == 0).all()
    assert valid[1, 1:].all() and 4 not in tokens[1, 3:]


def test_cached_path_uses_the_models_own_layers(trained):
    model, _, _ = trained
    cached = CachedGPT(model)
    assert cached.token_embedding is model.token_embedding
    assert all(any(b is layer for layer in model.layers) for b in cached.blocks)
    assert len(cached.blocks) == PRESETS["tiny"]["num_layers"]


def test_output_projection_is_tied_to_the_token_embedding():
    model = build("gpt_tiny")
    ids = _stride_sequences(2, 8, seed=1)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    assert np.abs(model(x)).max() > 0
    # The logits are (final hidden) @ table.T with no bias: a zero table gives zero logits.
    table = model.token_embedding.embeddings
    table.assign(np.zeros(table.shape, "float32"))
    np.testing.assert_array_equal(model(x), 0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_heads": 5}, "divisible by `num_heads`"), ({"vocab_size": 0}, "vocab_size"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gpt(**{**PRESETS["tiny"], **kwargs})
