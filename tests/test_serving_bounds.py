"""Request bounds: stated per signature kind, written into the export, read by the CLI and batching."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import bigkeras
from bigkeras import cli
from bigkeras.serving import bounds, gpt_signatures, image_classifier_signatures, translate_signatures
from bigkeras.serving import compatibility as compat
from bigkeras.serving.bounds import RequestBounds, bucket_sizes, check_image_headers


def test_bucket_sizes_are_powers_of_two_up_to_the_bound():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]
    with pytest.raises(ValueError, match="`max_rows` must be a positive integer"):
        bucket_sizes(0)


def test_default_rows_are_sized_for_the_model():
    assert RequestBounds.for_images(28, 28, 1).max_rows == 256  # Fashion-MNIST: the cap
    assert RequestBounds.for_images(224, 224, 3).max_rows == 16  # 16 x 224 x 224 x 3 floats: 9.2 MiB
    assert RequestBounds.for_text(64).max_rows == 256
    assert RequestBounds.for_text(512).max_rows == 32
    decoding = RequestBounds.for_decoding("generate", kv_cache_bytes_per_row=10 * 2**20)  # 10 MiB a row
    assert decoding.max_rows == 25  # 256 MiB budget
    assert decoding.with_max_batch_size(8).max_rows == 8
    with pytest.raises(ValueError, match="below the cache of one row"):
        RequestBounds.for_decoding("generate", kv_cache_bytes_per_row=2**30)


def test_the_decode_cache_bound_follows_the_model():
    gpt = bigkeras.build("gpt_tiny", vocab_size=256)
    sigs = gpt_signatures(gpt, keras_hub.tokenizers.ByteTokenizer(), max_length=16, examples=["hi"])
    layers, hidden = len(gpt.blocks), gpt.blocks[0].self_attention.qkv.kernel.shape[0]
    per_row = sigs["generate"].bounds.kv_cache_bytes_per_row
    assert per_row >= layers * 2 * 16 * hidden * 4  # keys and values, every block, 16 positions, float32
    seq2seq = bigkeras.build("seq2seq_tiny", vocab_size=256)
    short, long = (translate_signatures(seq2seq, keras_hub.tokenizers.ByteTokenizer(), source_length=n, target_length=6,
                                        start_token_id=2, end_token_id=3)["translate"].bounds for n in (8, 64))
    assert long.kv_cache_bytes_per_row > short.kv_cache_bytes_per_row  # the encoder context is cached too
    small = gpt_signatures(gpt, keras_hub.tokenizers.ByteTokenizer(), max_length=16, examples=["hi"],
                           kv_cache_budget_bytes=3 * per_row)["generate"]
    assert small.bounds.max_rows == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="key/value cache"):
        small.fn(prompt=tf.constant(["a"] * 4), max_new_tokens=tf.constant(2))  # the in-graph check, fn itself
    small(prompt=tf.constant(["a"] * 3), max_new_tokens=tf.constant(2))


def image_headers(data):
    return check_image_headers(tf.constant(data, tf.string), 100 * 100)


def test_image_sizes_come_from_the_header_of_every_format():
    grey = np.zeros((100, 100, 1), np.uint8)
    for encoded in (tf.io.encode_png(grey), tf.io.encode_jpeg(grey), tf.io.encode_png(np.zeros((50, 200, 3), np.uint8))):
        image_headers([encoded.numpy()])  # 10,000 pixels: at the bound
    bmp = (b"BM" + bytes(16) + (100).to_bytes(4, "little") + (-101 % 2**32).to_bytes(4, "little") + bytes(32))
    gif = b"GIF89a" + (101).to_bytes(2, "little") + (100).to_bytes(2, "little") + bytes(20)
    for over in (tf.io.encode_png(np.zeros((101, 100, 1), np.uint8)).numpy(), bmp, gif):
        with pytest.raises(tf.errors.InvalidArgumentError, match="over 10000 pixels"):
            image_headers([over])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be PNG, JPEG, GIF or BMP"):
        image_headers([b"RIFF....WEBP"])
    image_headers([])  # an empty batch has no image to check


def test_exports_state_their_bounds_and_the_cli_reads_them(tmp_path, capsys):
    cnn = bigkeras.build("cnn_tiny")
    path = bigkeras.serving.export_saved_model(cnn, "cnn", base_dir=tmp_path, signatures=image_classifier_signatures(cnn),
                                              max_batch_size=8, warmup=False, verify=False)
    stated = bounds.load_bounds(path)
    assert stated["serving_default"] == {"kind": "image", "max_batch_size": 8, "max_rows": 8}
    assert stated["serving_bytes"]["max_image_pixels"] == bounds.MAX_IMAGE_PIXELS
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "serving_bytes: 8 rows, 8,388,608 bytes per string, 16,777,216 pixels per image (4096x4096)" in out
    # Batching: the smallest row bound of the served exports, padded to the sizes the warmup covers.
    compat.write_report(tmp_path / "text" / "1", compat.compatibility_report({"MatMul"}))
    bounds.write_bounds(tmp_path / "text" / "1", {"serving_default": RequestBounds.for_text(512)})  # 32 rows
    assert cli.main(["serving-command", "--base-dir", str(tmp_path), "--batching", "--batch-threads", "1"]) == 0
    parameters = (tmp_path / "batching_parameters.txt").read_text()
    assert "max_batch_size { value: 8 }" in parameters and parameters.endswith(
        "allowed_batch_sizes: 1\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    with pytest.raises(SystemExit, match=r"`--max-batch-size` 16 is over the request bound of cnn/1 serving_bytes \(8 rows\)"):
        cli.main(["serving-command", "--base-dir", str(tmp_path), "--batching", "--max-batch-size", "16"])
