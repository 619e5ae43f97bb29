"""Bits per byte: compressors' arithmetic, the LM windows and NLL, and byte-level BPE byte counts."""

import math
import zlib

import numpy as np
import pytest

from bigkeras import bits

# A small synthetic corpus: repetitive "verses" and a held-out text with non-ASCII bytes.
RNG = np.random.default_rng(0)
WORDS = ["and", "the", "LORD", "said", "unto", "Moses", "behold", "Israel", "é", "naïve"]
TRAIN = "\n".join(" ".join(RNG.choice(WORDS, 12)) + "." for _ in range(300))
HELD = "\n".join(" ".join(RNG.choice(WORDS, 12)) + "." for _ in range(40))


def test_compressor_bits_are_extra_compressed_size_per_held_out_byte():
    identity = bits.compressor_bits_per_byte("abc", "héllo", codecs={"none": lambda b: b})
    assert identity == {"none": 8 * (1 + 6) / 6}  # the separator plus 6 UTF-8 bytes, stored as is

    scores = bits.compressor_bits_per_byte(TRAIN, HELD)
    assert list(scores) == ["xz -9e", "bzip2 -9", "zlib -9"]
    context, held = TRAIN.encode(), HELD.encode()
    want = 8 * (len(zlib.compress(context + b"\n" + held, 9)) - len(zlib.compress(context, 9))) / len(held)
    assert scores["zlib -9"] == pytest.approx(want, abs=1e-12)
    alone = bits.compressor_bits_per_byte(b"", HELD)
    assert all(0 < scores[k] < alone[k] < 8 for k in scores)  # the training text helps every codec
    with pytest.raises(ValueError, match="`text` must not be empty"):
        bits.compressor_bits_per_byte(TRAIN, "")


def test_bench_table_prints_every_codec_per_split():
    from bench.compressors import table

    text = table({"train": TRAIN, "validation": HELD[:400], "test": HELD})
    zlib_bits = bits.compressor_bits_per_byte(TRAIN, HELD)["zlib -9"]
    row = next(line for line in text.splitlines() if line.startswith("| zlib -9 |"))
    assert row.endswith(f"| {zlib_bits:.3f} ({2 ** zlib_bits:.2f}) |")
    assert all(f"| {name} |" in text for name in bits.CODECS)


def test_lm_windows_score_every_token_but_the_first_once():
    inputs, targets, weights = bits.lm_windows(np.arange(1, 11), 4)  # 10 tokens: 9 targets, 3 windows
    np.testing.assert_array_equal(inputs, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]])
    np.testing.assert_array_equal(targets, [[2, 3, 4, 5], [6, 7, 8, 9], [10, 0, 0, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert bits.bits_per_byte(math.log(2) * 12, 8) == 1.5
    with pytest.raises(ValueError, match="`ids` must hold at least 2 tokens"):
        bits.lm_windows([3], 4)
    with pytest.raises(ValueError, match="`num_bytes` must be a positive integer"):
        bits.bits_per_byte(1.0, 0)


def test_bpe_bits_per_byte_is_total_nll_over_the_texts_bytes():
    import tensorflow as tf

    import bigkeras
    from bigkeras.data.bpe import byte_lengths, byte_pair_tokenizer

    tokenizer = byte_pair_tokenizer(TRAIN.split("\n"), vocabulary_size=300)
    assert tokenizer.vocabulary_size() == 300 and tokenizer.token_to_id("<|endoftext|>") == 0
    ids = np.asarray(tokenizer(HELD), np.int32)
    token_bytes = byte_lengths(tokenizer)
    assert token_bytes[ids].sum() == len(HELD.encode("utf-8")) and len(ids) < len(HELD.encode()) / 2
    graph_ids = tf.function(lambda t: tokenizer(t))(tf.constant([HELD]))  # as in the export's graph
    np.testing.assert_array_equal(graph_ids.to_list()[0], ids)
    assert tokenizer.detokenize(ids) == HELD

    model = bigkeras.build("gpt_tiny", vocab_size=300, sequence_length=16)
    inputs, targets, weights = bits.lm_windows(ids, 16)
    nats = bits.total_nll(model, inputs, targets, weights, batch_size=3)
    logits = model({"token_ids": inputs, "padding_mask": np.ones_like(inputs)}).numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0][weights > 0].sum()
    assert nats == pytest.approx(want, rel=1e-5)
    scored_bytes = len(HELD.encode("utf-8")) - token_bytes[ids[0]]  # all but the first token
    assert token_bytes[targets][weights > 0].sum() == scored_bytes
    assert bits.bits_per_byte(nats, int(scored_bytes)) == pytest.approx(want / math.log(2) / scored_bytes)


def test_bpe_files_round_trip_and_bad_sizes_name_the_argument(tmp_path):
    from bigkeras.data.bpe import byte_pair_tokenizer, byte_to_char, read_files

    byte_pair_tokenizer(TRAIN.split("\n"), vocabulary_size=280, directory=tmp_path)
    vocabulary, merges = read_files(tmp_path)
    assert len(vocabulary) == 280 and len(merges) == 280 - 257 and " " in merges[0]
    table = byte_to_char()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    with pytest.raises(ValueError, match="`vocabulary_size` must be at least 257"):
        byte_pair_tokenizer(["a b"], vocabulary_size=100)
    with pytest.raises(ValueError, match="`train_texts` must be a non-empty list"):
        byte_pair_tokenizer("just one string", vocabulary_size=300)
