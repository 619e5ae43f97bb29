"""Translation in one graph: a ``translate`` signature, and the training examples it agrees with.

A seq2seq export takes source strings and returns target strings: the tokenizer, the encoder,
the cached decode loop (``bigkeras.generation``: one ``tf.while_loop`` over a fixed key/value
cache) and the detokenizer all run inside the SavedModel, so a TF Serving client sends
``{"source": ["4. März 1998"]}`` and gets ``{"translation": ["1998-03-04"]}``.

Training and serving must tokenize alike, so both live here: ``teacher_forcing_examples``
turns (source, target) text pairs into the arrays a ``seq2seq`` model trains on, with the same
truncation, start and end tokens that ``translate_signatures`` uses when it decodes.

    examples = teacher_forcing_examples(tokenizer, pairs.x, pairs.y, source_length=40,
                                        target_length=12, start_token_id=2, end_token_id=3)
    signatures = translate_signatures(model, tokenizer, source_length=40, target_length=12,
                                      start_token_id=2, end_token_id=3)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from bigkeras import checks
from bigkeras.serving.bounds import KV_CACHE_BUDGET_BYTES, RequestBounds, check_kv_cache
from bigkeras.serving.signatures import Signature, _detokenize, _pad_id, _ragged_ids, compiling


def teacher_forcing_examples(
    tokenizer,
    sources: Sequence[str],
    targets: Sequence[str],
    *,
    source_length: int,
    target_length: int,
    start_token_id: int,
    end_token_id: int,
    target_tokenizer=None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Text pairs to right-padded ``(features, labels, weights)`` arrays for a ``seq2seq`` model.

    The target becomes ``[start] + tokens + [end]`` (tokens cut to ``target_length - 1``); the
    decoder reads it shifted right and predicts it shifted left (teacher forcing).

    Args:
        tokenizer: a keras-hub ``Tokenizer`` for the source (and the target, by default).
        sources: the source texts.
        targets: the target texts, aligned with ``sources``.
        source_length: int, source tokens kept (the rest are cut).
        target_length: int, decoder positions: target tokens plus the end token.
        start_token_id: int, the decoder's first input.
        end_token_id: int, the last label; decoding stops after it.
        target_tokenizer: optional separate tokenizer for the targets.

    Returns:
        ``features`` with int32 ``encoder_token_ids`` and ``encoder_padding_mask``
        ``(n, source_length)``, ``decoder_token_ids`` and ``decoder_padding_mask``
        ``(n, target_length)``; ``labels`` int32 ``(n, target_length)``; ``weights`` float32
        ``(n, target_length)``, 1 on real labels and 0 on padding (for the loss).
    """
    checks.positive_int("source_length", source_length)
    checks.positive_int("target_length", target_length)
    if len(sources) != len(targets):
        raise ValueError(f"`sources` and `targets` must align, got {len(sources)} and {len(targets)} texts.")
    target_tokenizer = target_tokenizer or tokenizer
    source = _tokenize(tokenizer, sources)[:, :source_length]
    target = _tokenize(target_tokenizer, targets)[:, : target_length - 1]
    rows = target.nrows()
    start = tf.fill([rows, 1], start_token_id)
    end = tf.fill([rows, 1], end_token_id)
    sequence = tf.concat([start, target, end], axis=1)  # (n, <= target_length + 1), ragged
    decoder, labels = sequence[:, :-1], sequence[:, 1:]

    def dense(ids, length):  # ragged -> (n, length) ids and mask, padded on the right
        return (ids.to_tensor(0, shape=[None, length]).numpy(),
                tf.sequence_mask(ids.row_lengths(), length, tf.int32).numpy())

    encoder_ids, encoder_mask = dense(source, source_length)
    decoder_ids, decoder_mask = dense(decoder, target_length)
    features = {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": decoder_mask,
    }
    return features, dense(labels, target_length)[0], decoder_mask.astype(np.float32)


def translate_signatures(
    model: keras.Model,
    tokenizer,
    *,
    source_length: int,
    target_length: int,
    start_token_id: int,
    end_token_id: int,
    target_tokenizer=None,
    sampler="greedy",
    examples: Sequence[str] | None = None,
    kv_cache_budget_bytes: int = KV_CACHE_BUDGET_BYTES,
) -> dict[str, Signature]:
    """A ``translate`` signature: source strings in, target strings out, decoded in-graph.

    The source is tokenized, cut to ``source_length`` tokens and padded to the batch's longest;
    the decoder starts from ``start_token_id`` and runs ``bigkeras.generation``'s cached loop
    for at most ``target_length`` tokens, stopping each row at ``end_token_id``; start, end and
    padding are dropped before detokenizing. The arguments must match the ones the model was
    trained with (``teacher_forcing_examples``).

    Args:
        model: a ``seq2seq`` model (inputs ``encoder_token_ids``, ``encoder_padding_mask``,
            ``decoder_token_ids``, ``decoder_padding_mask``).
        tokenizer: a keras-hub ``Tokenizer`` for the source (and the target, by default).
            WordPiece graphs need TF Text ops at load time; the byte tokenizer's are core ops.
        source_length: int, source tokens kept.
        target_length: int, the most target tokens generated (the end token included).
        start_token_id: int, the decoder's first token.
        end_token_id: int, ends a row's translation (left out of the output).
        target_tokenizer: optional keras-hub ``Tokenizer`` that detokenizes the target.
        sampler: a name in ``bigkeras.generation.SAMPLERS`` (``"greedy"``, ``"beam"``, ...) or
            a keras-hub ``Sampler``. Default ``"greedy"``.
        examples: optional sequence of str, real sources for warmup and the parity check.
        kv_cache_budget_bytes: int, the decode cache one request may need (each row: the
            decoder's keys and values, and the encoder context of ``source_length`` tokens);
            this bounds the rows. Default 256 MiB.

    Returns:
        ``{"translate": Signature}``: input ``source`` string ``(batch,)``; outputs
        ``translation`` string ``(batch,)`` and ``translation_ids`` int32
        ``(batch, target_length)`` (the generated ids, 0 after the end token).

    Example:
        >>> sigs = translate_signatures(model, keras_hub.tokenizers.ByteTokenizer(),
        ...                             source_length=40, target_length=11,
        ...                             start_token_id=2, end_token_id=3)
        >>> sigs["translate"](source=tf.constant(["4 mars 1998"]))["translation"]
    """
    from bigkeras.generation import cache_bytes_per_row, make_generate_fn  # keras-hub samplers; load on use

    checks.positive_int("source_length", source_length)
    checks.positive_int("target_length", target_length)
    checks.positive_int("start_token_id", start_token_id, allow_zero=True)
    checks.positive_int("end_token_id", end_token_id, allow_zero=True)
    target_tokenizer = target_tokenizer or tokenizer
    generate_fn = make_generate_fn(
        model, max_length=target_length + 1, sampler=sampler,
        stop_token_ids=[end_token_id], start_token_id=start_token_id, jit_compile=False,  # TF Serving: no XLA by default
    )
    pad_id = _pad_id(tokenizer)
    drop = tf.constant(sorted({0, start_token_id, end_token_id}), tf.int32)
    source_spec = tf.TensorSpec((None,), tf.string, "source")
    examples = np.array(list(examples) if examples is not None else ["hello world", "zzyzx"], dtype=object)
    per_row = cache_bytes_per_row(model, input_length=source_length, max_length=target_length + 1)
    bounds = RequestBounds.for_decoding("translate", per_row, kv_cache_budget_bytes)

    def translate(source):
        if compiling() is not None:  # source lengths are not bucketed yet: each would compile
            raise ValueError("`jit_compile=True` does not support `translate` signatures (seq2seq and T5) yet; "
                             "export them with jit_compile=False.")
        source = tf.ensure_shape(source, source_spec.shape)
        with tf.control_dependencies([check_kv_cache(tf.shape(source)[0], bounds)]):  # before tokenizing
            source = tf.identity(source)
        ids = _ragged_ids(tokenizer(source), pad_id)[:, :source_length]  # (batch, ?)
        mask = tf.ragged.map_flat_values(tf.ones_like, ids)
        out = generate_fn(ids.to_tensor(pad_id), mask.to_tensor(0))  # (batch, 1 + target_length)
        new_ids = out["token_ids"][:, 1:]  # without the start token
        keep = tf.logical_and(out["padding_mask"][:, 1:], tf.reduce_all(new_ids[..., None] != drop, -1))
        return {
            "translation": _detokenize(target_tokenizer, tf.ragged.boolean_mask(new_ids, keep)),
            "translation_ids": tf.where(keep, new_ids, 0),
        }

    resources = (model, tokenizer, target_tokenizer)
    return {"translate": Signature(translate, {"source": source_spec}, {"source": examples}, resources, bounds)}


def translate_texts(translate: Signature, texts: Sequence[str], *, batch_size: int) -> np.ndarray:
    """Run a ``translate`` signature over many texts in batches of about ``batch_size``.

    Args:
        translate: the ``"translate"`` entry of ``translate_signatures(...)``.
        texts: the source texts (``str``).
        batch_size: int, texts per call (the texts are cut into ``len // batch_size`` equal
            batches, at least one).

    Returns:
        The translations, a ``str`` array aligned with ``texts`` (decoded from UTF-8).
    """
    checks.positive_int("batch_size", batch_size)
    batches = np.array_split(np.asarray(texts, dtype=object), max(1, len(texts) // batch_size))
    translations = [translate(source=tf.constant([str(t) for t in batch]))["translation"].numpy() for batch in batches]
    return np.array([t.decode("utf-8") for t in np.concatenate(translations)], dtype=str)


def _tokenize(tokenizer, texts) -> tf.RaggedTensor:
    """Texts to ragged int32 ids ``(n, ?)``, as the serving graph tokenizes them."""
    texts = tf.constant([str(t) for t in texts])  # str -> UTF-8 bytes
    return _ragged_ids(tokenizer(texts), _pad_id(tokenizer))
