"""seq2seq: the Transformer-base shape, learning to reverse, cached greedy and beam decoding."""

import keras
import keras_hub
import numpy as np
import pytest

from bigkeras import build
from bigkeras.generation import generate, left_pad, make_generate_fn
from bigkeras.layers.decoder import TransformerDecoderBlock
from bigkeras.layers.transformer import TransformerEncoderBlock
from bigkeras.models.seq2seq import PRESETS, seq2seq

PAD, START, END = 0, 1, 2  # ids 3.. are words


def _reverse_task(n, seed, min_len=3, max_len=7):
    """Random sentences of ids 3..15 (right-padded) and their reversals + END."""
    rng = np.random.default_rng(seed)
    sources = [list(rng.integers(3, 16, size=rng.integers(min_len, max_len + 1))) for _ in range(n)]
    width = max_len + 1
    enc = np.zeros((n, max_len), "int32")
    dec_in = np.zeros((n, width), "int32")
    dec_out = np.zeros((n, width), "int32")
    for i, s in enumerate(sources):
        target = s[::-1] + [END]
        enc[i, : len(s)] = s
        dec_in[i, : len(target)] = [START] + target[:-1]
        dec_out[i, : len(target)] = target
    return sources, enc, dec_in, dec_out


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = build("seq2seq_tiny", hidden_dim=64, intermediate_dim=128, num_heads=4, num_encoder_layers=2, num_decoder_layers=2)
    _, enc, dec_in, dec_out = _reverse_task(4096, seed=0)
    x = {"encoder_token_ids": enc, "encoder_padding_mask": (enc != PAD).astype("int32"),
         "decoder_token_ids": dec_in, "decoder_padding_mask": (dec_in != PAD).astype("int32") | (dec_out != PAD)}
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = (dec_out != PAD).astype("float32")
    first = model.evaluate({k: v[:512] for k, v in x.items()}, dec_out[:512], sample_weight=weights[:512], verbose=0)
    history = model.fit(x, dec_out, sample_weight=weights, batch_size=32, epochs=3, verbose=0)  # 384 steps
    return model, first, history.history["loss"]


def test_transformer_base_parameter_count_and_blocks_match_keras_hub():
    model = build("transformer_base")
    # Per block, the same count as keras-hub's encoder and decoder layers of the base shape.
    ref_encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=2048, num_heads=8)
    ref_encoder.build((None, None, 512))
    ref_decoder = keras_hub.layers.TransformerDecoder(intermediate_dim=2048, num_heads=8)
    ref_decoder.build((None, None, 512), (None, None, 512))
    encoder_blocks = [l for l in model.layers if isinstance(l, TransformerEncoderBlock)]  # noqa: E741
    decoder_blocks = [l for l in model.layers if isinstance(l, TransformerDecoderBlock)]  # noqa: E741
    assert len(encoder_blocks) == len(decoder_blocks) == 6
    assert {b.count_params() for b in encoder_blocks} == {ref_encoder.count_params()} == {3_152_384}
    assert {b.count_params() for b in decoder_blocks} == {ref_decoder.count_params()} == {4_204_032}
    # 37,000 x 512 shared (tied) embedding + 6 encoder + 6 decoder blocks + 2 final norms.
    expected = 37_000 * 512 + 6 * 3_152_384 + 6 * 4_204_032 + 2 * 1024
    assert model.count_params() == expected == 63_084_544
    # Post-norm (the paper's layout) has no final norms.
    assert build("transformer_base", norm_first=False).count_params() == expected - 2048


def test_separate_vocabularies_get_separate_embeddings():
    model = seq2seq(**{**PRESETS["tiny"], "target_vocab_size": 40})
    shared = build("seq2seq_tiny")
    assert model.count_params() - shared.count_params() == 40 * PRESETS["tiny"]["hidden_dim"]
    x = {"encoder_token_ids": np.full((2, 5), 31), "encoder_padding_mask": np.ones((2, 5)),
         "decoder_token_ids": np.full((2, 4), 39), "decoder_padding_mask": np.ones((2, 4))}
    assert model(x).shape == (2, 4, 40)


@pytest.mark.slow  # trains for about 30 s on 2 cores
def test_tiny_seq2seq_learns_to_reverse(trained):
    model, first, losses = trained
    assert losses[-1] < 0.1 * first, (first, losses)


@pytest.mark.slow  # trains for about 30 s on 2 cores
def test_cached_greedy_equals_full_recomputation_and_reverses(trained):
    model, _, _ = trained
    sources, _, _, _ = _reverse_task(32, seed=99)
    ids, mask = left_pad(sources)  # left-padded sources of different lengths
    cached = make_generate_fn(model, max_length=9, start_token_id=START, stop_token_ids=[END])(ids, mask)
    full = make_generate_fn(model, max_length=9, start_token_id=START, stop_token_ids=[END], use_cache=False)(ids, mask)
    np.testing.assert_array_equal(cached["token_ids"].numpy(), full["token_ids"].numpy())
    np.testing.assert_array_equal(cached["padding_mask"].numpy(), full["padding_mask"].numpy())
    tokens = cached["token_ids"].numpy()
    correct = [list(tokens[i, 1 : len(s) + 2]) == s[::-1] + [END] for i, s in enumerate(sources)]
    assert np.mean(correct) >= 0.8, tokens
    # Left-padded and right-padded sources decode alike (positions skip padding).
    _, enc, _, _ = _reverse_task(32, seed=99)
    right = generate(model, enc, 8, start_token_id=START, stop_token_ids=[END])
    np.testing.assert_array_equal(right["token_ids"], tokens)


def _log_likelihood(model, enc, out):
    """Teacher-forced log-likelihood of each decoded row up to and including its END."""
    x = {"encoder_token_ids": enc, "encoder_padding_mask": (enc != PAD).astype("int32"),
         "decoder_token_ids": out[:, :-1], "decoder_padding_mask": np.ones_like(out[:, :-1])}
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(model(x), axis=-1))
    target = out[:, 1:]
    per_token = np.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
    upto_end = np.cumsum(np.cumsum(target == END, axis=1), axis=1) <= 1
    return (per_token * upto_end).sum(axis=1)


@pytest.mark.slow  # trains for about 30 s on 2 cores
def test_beam_search_finds_likelier_translations_than_greedy(trained):
    model, _, _ = trained
    sources, enc, _, _ = _reverse_task(64, seed=5)
    decode = {"start_token_id": START, "stop_token_ids": [END]}
    beam = generate(model, enc, 8, sampler=keras_hub.samplers.BeamSampler(num_beams=3), **decode)["token_ids"]
    greedy = generate(model, enc, 8, **decode)["token_ids"]
    assert (_log_likelihood(model, enc, beam) >= _log_likelihood(model, enc, greedy) - 1e-4).all()
    correct = [list(beam[i, 1 : len(s) + 2]) == s[::-1] + [END] for i, s in enumerate(sources)]
    assert np.mean(correct) >= 0.8
    # One beam is greedy search.
    one = generate(model, enc, 8, sampler=keras_hub.samplers.BeamSampler(num_beams=1), **decode)["token_ids"]
    np.testing.assert_array_equal(one, greedy)


def test_generate_without_start_token_says_so():
    with pytest.raises(ValueError, match="start_token_id"):
        make_generate_fn(build("seq2seq_tiny"), max_length=8)


@pytest.mark.parametrize("kwargs, message", [({"num_encoder_layers": 0}, "num_encoder_layers"),
                                             ({"target_vocab_size": -3}, "target_vocab_size"),
                                             ({"hidden_dim": 30, "num_heads": 4}, "divisible")])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        seq2seq(**{**PRESETS["tiny"], **kwargs})
