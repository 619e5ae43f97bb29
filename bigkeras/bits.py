"""Language models and compressors on one scale: bits per byte of the original UTF-8 text.

A model's total negative log-likelihood of a text (nats), divided by ln 2 and by the text's
length in UTF-8 bytes, is the size an arithmetic coder driven by the model would reach, in
bits per byte; it does not depend on the tokenization (bytes, BPE), so byte-level and BPE
models compare directly. A compressor given the training text first scores a held-out text
by the extra compressed size of ``train + held`` over ``train`` alone, per held-out byte.
Perplexity per byte is ``2 ** bits_per_byte``.

    windows = lm_windows(test_ids, 128)
    nats = total_nll(model, *windows)
    bits_per_byte(nats, byte_lengths[windows[1]][windows[2] > 0].sum())
    compressor_bits_per_byte(train_text, test_text)  # {"xz -9e": 1.69, "bzip2 -9": 1.94, ...}
"""

from __future__ import annotations

import bz2
import lzma
import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np

from bigkeras import checks

CODECS: dict[str, Callable[[bytes], bytes]] = {  # the command-line tool each one matches
    "xz -9e": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
    "bzip2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "zlib -9": lambda data: zlib.compress(data, level=9),
}
SEPARATOR = b"\n"  # between the training text and the held-out text, as between verses


def bits_per_byte(nll_nats: float, num_bytes: int) -> float:
    """Total negative log-likelihood in nats to bits per byte: ``nll / ln 2 / num_bytes``.

    Args:
        nll_nats: float, the summed negative log-likelihood (natural log) of the text.
        num_bytes: int, the text's length in UTF-8 bytes.

    Example:
        >>> bits_per_byte(math.log(2) * 12, 8)
        1.5
    """
    checks.positive_int("num_bytes", num_bytes)
    if not math.isfinite(nll_nats) or nll_nats < 0:
        raise ValueError(f"`nll_nats` must be a finite number >= 0, got {nll_nats}.")
    return float(nll_nats) / math.log(2) / num_bytes


def compressor_bits_per_byte(
    context: str | bytes, text: str | bytes, codecs: Mapping[str, Callable[[bytes], bytes]] | None = None
) -> dict[str, float]:
    """Bits per byte of ``text`` for each compressor, given ``context`` (the training text).

    ``8 * (len(compress(context + SEPARATOR + text)) - len(compress(context))) / len(text)``,
    with ``str`` arguments encoded as UTF-8.

    Args:
        context: the text the compressor reads first (the training split).
        text: the held-out text it is scored on.
        codecs: ``{name: compress}``; default ``CODECS`` (xz -9e, bzip2 -9, zlib -9).

    Returns:
        ``{name: bits per byte}`` in the order of ``codecs``.
    """
    context, text = (t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in (context, text))
    if not text:
        raise ValueError("`text` must not be empty: bits per byte of nothing is undefined.")
    scores = {}
    for name, compress in (CODECS if codecs is None else codecs).items():
        extra = len(compress(context + SEPARATOR + text)) - len(compress(context))
        scores[name] = 8.0 * extra / len(text)
    return scores


def lm_windows(ids, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a token stream into next-token examples that score every token but the first once.

    Args:
        ids: int sequence, the whole split's token ids in reading order.
        length: int, tokens per window (the model's context).

    Returns:
        ``(inputs, targets, weights)``, each int32 ``(n, length)``: ``targets`` are
        ``inputs`` shifted by one token; the last window is padded with id 0 and weight 0.
    """
    checks.positive_int("length", length)
    ids = np.asarray(ids, dtype=np.int32).ravel()
    if ids.size < 2:
        raise ValueError(f"`ids` must hold at least 2 tokens to predict one, got {ids.size}.")
    n = -(-(ids.size - 1) // length)  # windows, the last one partial
    padded = np.zeros(n * length + 1, np.int32)
    padded[: ids.size] = ids
    weights = np.zeros(n * length, np.int32)
    weights[: ids.size - 1] = 1
    starts = np.arange(n) * length
    rows = starts[:, None] + np.arange(length)  # (n, length)
    return padded[rows], padded[rows + 1], weights.reshape(n, length)


def total_nll(model, inputs, targets, weights, *, batch_size: int = 128) -> float:
    """The summed negative log-likelihood (nats) of ``targets`` where ``weights`` is 1.

    Args:
        model: a ``gpt`` model (inputs ``token_ids`` and ``padding_mask``; logits out).
        inputs, targets, weights: from ``lm_windows``.
        batch_size: int, windows per forward pass.
    """
    import tensorflow as tf

    checks.positive_int("batch_size", batch_size)

    @tf.function(reduce_retracing=True)
    def batch_nll(ids, labels, w):
        logits = model({"token_ids": ids, "padding_mask": tf.ones_like(ids)}, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))
        return tf.reduce_sum(tf.cast(nll, tf.float64) * tf.cast(w, tf.float64))

    total = 0.0
    for start in range(0, len(inputs), batch_size):
        part = slice(start, start + batch_size)
        total += float(batch_nll(tf.constant(inputs[part]), tf.constant(targets[part]), tf.constant(weights[part])))
    return total
