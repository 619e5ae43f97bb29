"""BERT: the BERT-base shape against keras-hub, pre-training, fine-tuning, MLM masking."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from bigkeras import build
from bigkeras.data.masking import mlm_masking
from bigkeras.models.bert import BACKBONE_PRESETS, bert_backbone, bert_classifier, bert_pretraining

MASK = 4  # [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4


def test_bert_base_backbone_matches_keras_hub_parameter_count():
    ours = bert_backbone(**BACKBONE_PRESETS["bert_base"])
    reference = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=12, num_heads=12, hidden_dim=768,
        intermediate_dim=3072, max_sequence_length=512, num_segments=2,
    )
    assert ours.count_params() == reference.count_params() == 109_482_240
    # The registered bert_base is the classifier: backbone + a 768 x 2 head.
    assert build("bert_base").count_params() == 109_482_240 + 768 * 2 + 2


def _corpus(n, length, seed):
    """[CLS] + a counting-mod-20 sentence (ids 5..24) + [SEP]: each token follows from its neighbours."""
    rng = np.random.default_rng(seed)
    body = (rng.integers(0, 20, size=(n, 1)) + np.arange(length - 2)) % 20 + 5
    cls, sep = np.full((n, 1), 2), np.full((n, 1), 3)
    return np.concatenate([cls, body, sep], axis=1).astype("int32")


@pytest.mark.slow  # about 40 s of pre-training on 2 cores
def test_tiny_bert_pretrains_and_the_classifier_fine_tunes_the_same_weights():
    keras.utils.set_random_seed(0)
    backbone = bert_backbone(**BACKBONE_PRESETS["tiny"])
    pretrainer = bert_pretraining(backbone=backbone)
    tokens = _corpus(4096, 16, seed=0)
    features = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": np.ones_like(tokens),
                "next_sentence_label": np.zeros(len(tokens), "int32")}
    masker = mlm_masking(vocab_size=64, mask_token_id=MASK, special_token_ids=(0, 1, 2, 3, 4))
    ds = tf.data.Dataset.from_tensor_slices(features).batch(32).map(masker)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pretrainer.compile(keras.optimizers.Adam(1e-3), loss={"mlm_logits": loss, "nsp_logits": loss},
                       loss_weights={"mlm_logits": 1.0, "nsp_logits": 0.0})
    first = pretrainer.evaluate(ds.take(8), verbose=0, return_dict=True)["mlm_logits_loss"]
    pretrainer.fit(ds.repeat(), steps_per_epoch=400, epochs=1, verbose=0)
    last = pretrainer.evaluate(ds.take(8), verbose=0, return_dict=True)["mlm_logits_loss"]
    # Well below both the start (ln 64 = 4.2) and the unigram plateau (ln 20 = 3.0).
    assert last < 0.5 * first, (first, last)

    # Fine-tuning reuses the pre-trained backbone's variables, not copies.
    classifier = bert_classifier(backbone=backbone, num_classes=3)
    table = backbone.token_embedding.embeddings
    assert any(w is table for w in classifier.weights)
    assert any(w is table for w in pretrainer.weights)
    x = {k: tokens[:4] * 0 + v for k, v in {"token_ids": tokens[:4], "segment_ids": 0, "padding_mask": 1}.items()}
    assert classifier(x).shape == (4, 3)


def test_mlm_head_is_tied_to_the_token_embedding():
    pretrainer = bert_pretraining(**BACKBONE_PRESETS["tiny"])
    backbone = bert_backbone(**BACKBONE_PRESETS["tiny"])
    hidden, vocab = 32, 64
    # Head: dense + norm + vocab bias + NSP dense, and no second (vocab, hidden) table.
    head = hidden * hidden + hidden + 2 * hidden + vocab + hidden * 2 + 2
    assert pretrainer.count_params() == backbone.count_params() + head


def test_mlm_masking_statistics():
    rng = np.random.default_rng(0)
    vocab, n, length = 1000, 2000, 64
    ids = rng.integers(5, vocab, size=(n, length)).astype("int32")
    lengths = rng.integers(10, length, size=n)
    ids[:, 0] = 2
    for row, size in enumerate(lengths):
        ids[row, size - 1], ids[row, size:] = 3, 0  # [SEP] then padding
    masker = mlm_masking(vocab_size=vocab, mask_token_id=MASK, special_token_ids=(0, 2, 3), max_selections=length)
    ds = tf.data.Dataset.from_tensor_slices({"token_ids": ids}).batch(250).map(masker)
    masked, positions, labels, weights = [], [], [], []
    for inputs, y, w in ds:
        masked.append(inputs["token_ids"].numpy())
        positions.append(inputs["mask_positions"].numpy())
        labels.append(y["mlm_logits"].numpy())
        weights.append(w["mlm_logits"].numpy())
    masked, positions, labels, weights = map(np.concatenate, (masked, positions, labels, weights))

    # 15% of each row's eligible tokens, rounded up (TF Text's selector): about 16% overall.
    eligible = (ids > 4).sum(axis=1)
    np.testing.assert_array_equal(weights.sum(axis=1), np.ceil(0.15 * eligible))
    # Special tokens and padding are never touched.
    assert (masked[ids <= 4] == ids[ids <= 4]).all()
    # Labels are the original tokens at the selected positions; nothing else changes.
    rows = np.repeat(np.arange(n)[:, None], length, axis=1)[weights > 0]
    cols = positions[weights > 0]
    np.testing.assert_array_equal(labels[weights > 0], ids[rows, cols])
    untouched = np.ones_like(ids, bool)
    untouched[rows, cols] = False
    assert (masked[untouched] == ids[untouched]).all()
    # 80 / 10 / 10 among ~18,000 selections (3 sigma is about 0.9 points).
    new = masked[rows, cols]
    assert abs((new == MASK).mean() - 0.8) < 0.015
    assert abs((new == ids[rows, cols]).mean() - 0.1) < 0.012
    assert abs(((new != MASK) & (new != ids[rows, cols])).mean() - 0.1) < 0.012


def test_masking_defaults_to_fixed_width_slots():
    masker = mlm_masking(vocab_size=50, mask_token_id=MASK)
    inputs, labels, weights = masker({"token_ids": tf.constant(np.full((3, 40), 9, "int32"))})
    assert inputs["mask_positions"].shape == (3, 6)  # ceil(0.15 * 40)
    assert labels["mlm_logits"].shape == weights["mlm_logits"].shape == (3, 6)


def test_wordpiece_tokenizer_learns_a_vocabulary_with_bert_special_tokens():
    from bigkeras.data import wordpiece_tokenizer

    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20
    tokenizer = wordpiece_tokenizer(texts, vocabulary_size=80)
    assert tokenizer.get_vocabulary()[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    ids = np.asarray(tokenizer(["The cat sat"])).tolist()[0]
    assert tokenizer.token_to_id("[UNK]") not in ids  # every word is in the learned vocabulary
    detokenized = tokenizer.detokenize([ids])
    assert (detokenized[0] if isinstance(detokenized, list) else detokenized.numpy()[0].decode()) == "the cat sat"


@pytest.mark.parametrize("kwargs, message", [({"num_segments": 0}, "num_segments"), ({"dropout": -0.1}, "dropout")])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bert_backbone(**{**BACKBONE_PRESETS["tiny"], **kwargs})


def test_masking_rejects_a_mask_id_outside_the_vocabulary():
    with pytest.raises(ValueError, match="mask_token_id"):
        mlm_masking(vocab_size=10, mask_token_id=10)
