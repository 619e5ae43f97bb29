"""Masked-language-model masking as a ``tf.data`` step (BERT pre-training).

Devlin et al., 2018 (https://arxiv.org/abs/1810.04805), section 3.1: select 15% of the
tokens; replace 80% of the selected with ``[MASK]``, 10% with a random token and leave 10%
unchanged; predict the originals. Special tokens and padding are never selected. The
selection and replacement are keras-hub's ``MaskedLMMaskGenerator`` (TF Text ops, so the step
runs inside ``Dataset.map``).

Example:
    >>> masker = mlm_masking(vocab_size=30522, mask_token_id=103, special_token_ids=(0, 101, 102))
    >>> ds = ds.map(masker)  # features with "token_ids" -> (inputs, labels, weights)
"""

from __future__ import annotations

import math

import keras_hub
import tensorflow as tf

from bigkeras import checks


def mlm_masking(
    *,
    vocab_size: int,
    mask_token_id: int,
    special_token_ids=(0,),
    selection_rate: float = 0.15,
    mask_token_rate: float = 0.8,
    random_token_rate: float = 0.1,
    max_selections: int | None = None,
):
    """A ``Dataset.map`` function that masks ``token_ids`` for masked-LM pre-training.

    Args:
        vocab_size: int, the vocabulary size (random replacements are drawn from it).
        mask_token_id: int, the ``[MASK]`` id.
        special_token_ids: sequence of int never selected: padding (0), ``[CLS]``, ``[SEP]``
            and the like. Default ``(0,)``.
        selection_rate: float in [0, 1), the share of eligible tokens to predict. Default 0.15.
        mask_token_rate: float, the share of the selected replaced by ``[MASK]``. Default 0.8.
        random_token_rate: float, the share replaced by a random token. Default 0.1; the rest
            stay unchanged.
        max_selections: int, the fixed number of prediction slots per sequence (extra
            selections are dropped, unused slots get weight 0). Default
            ``ceil(selection_rate * sequence_length)`` from the inputs' static length.

    Returns:
        A function of a features dict with int ``token_ids`` ``(batch, seq)`` or ``(seq,)``
        (other keys, such as ``segment_ids``, ``padding_mask`` and ``next_sentence_label``,
        pass through) returning ``(inputs, labels, sample_weights)`` for ``bert_pretraining``:
        ``inputs`` holds the masked ``token_ids`` and ``mask_positions`` (int32,
        ``max_selections`` wide) plus the other features except ``next_sentence_label``;
        ``labels["mlm_logits"]`` the original ids; ``sample_weights["mlm_logits"]`` 1 for real
        slots, 0 for padding slots. A ``next_sentence_label`` feature becomes
        ``labels["nsp_logits"]``.
    """
    checks.positive_int("vocab_size", vocab_size)
    checks.positive_int("mask_token_id", mask_token_id, allow_zero=True)
    if mask_token_id >= vocab_size:
        raise ValueError(f"`mask_token_id` must be below `vocab_size`={vocab_size}, got {mask_token_id}.")
    checks.fraction("selection_rate", selection_rate)
    checks.fraction("mask_token_rate", mask_token_rate, inclusive_high=True)
    checks.fraction("random_token_rate", random_token_rate, inclusive_high=True)
    if mask_token_rate + random_token_rate > 1:
        raise ValueError(
            f"`mask_token_rate` + `random_token_rate` must be at most 1, got "
            f"{mask_token_rate} + {random_token_rate}."
        )
    if max_selections is not None:
        checks.positive_int("max_selections", max_selections)
    special = [int(t) for t in special_token_ids]
    generators = {}

    def generator(length):
        # One keras-hub layer per selection width (tf.data traces the step once).
        width = max_selections or max(1, math.ceil(selection_rate * length))
        if width not in generators:
            generators[width] = keras_hub.layers.MaskedLMMaskGenerator(
                vocabulary_size=vocab_size,
                mask_selection_rate=selection_rate,
                mask_token_id=mask_token_id,
                mask_selection_length=width,
                unselectable_token_ids=special,
                mask_token_rate=mask_token_rate,
                random_token_rate=random_token_rate,
            )
        return generators[width]

    def mask(features):
        features = dict(features)
        token_ids = features.pop("token_ids")
        length = token_ids.shape[-1]
        if length is None and max_selections is None:
            raise ValueError("`token_ids` has no static length: pass `max_selections`.")
        masked = generator(length)(token_ids)
        inputs = {**features, "token_ids": masked["token_ids"], "mask_positions": tf.cast(masked["mask_positions"], tf.int32)}
        labels = {"mlm_logits": masked["mask_ids"]}
        weights = {"mlm_logits": masked["mask_weights"]}
        if "next_sentence_label" in inputs:
            labels["nsp_logits"] = inputs.pop("next_sentence_label")
            weights["nsp_logits"] = tf.ones_like(labels["nsp_logits"], tf.float32)
        return inputs, labels, weights

    return mask
