"""Core-op BERT packing equals keras-hub's BertTextClassifierPreprocessor for one segment."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from bigkeras import data
from bigkeras.data.packing import BertSingleSegmentPreprocessor

EDGE_TEXTS = ["word " * 200, "", "   ", "caf\u00e9 \u201cquoted\u201d \u00c9T\u00c9 \U0001F600 \u00df\u03a3",
              "[CLS] [SEP] [PAD] [MASK] [UNK]", "unaffable antidisestablishmentarianism"]


@pytest.fixture(scope="module")
def texts():
    reviews = [str(t) for t in data.load("rotten_tomatoes").test.x]
    joined = [" ".join(reviews[i : i + 3]) for i in range(0, 60, 3)]  # real text past 62 wordpieces
    return reviews[:360] + sorted(reviews, key=len)[-40:] + joined + EDGE_TEXTS


@pytest.fixture(scope="module", params=["keras_hub", "hugging_face"])
def tokenizer(request, minilm_tokenizer):
    """keras-hub's BertTokenizer (bible_bert) and the MiniLM checkpoint's own (reviews_minilm).

    ``minilm_tokenizer`` (conftest.py) skips only when the checkpoint's package is not
    installed; an error while loading it fails the tests."""
    if request.param == "hugging_face":
        return minilm_tokenizer
    return keras_hub.models.BertTokenizer(vocabulary=minilm_tokenizer.get_vocabulary(), lowercase=True)


@pytest.mark.parametrize("sequence_length", [64, 12, 2])
def test_outputs_equal_keras_hub_including_truncation(tokenizer, texts, sequence_length):
    reference = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
    packer = BertSingleSegmentPreprocessor(tokenizer, sequence_length=sequence_length)
    batch = tf.constant(texts)
    got = packer(batch)
    traced = tf.function(lambda x: packer(x), autograph=False)(batch)  # the graph an export holds
    for want in (reference(batch), tf.function(lambda x: reference(x), autograph=False)(batch)):
        for key in ("token_ids", "segment_ids", "padding_mask"):
            for mine in (got, traced):
                a, b = np.asarray(mine[key]), np.asarray(want[key])
                assert a.dtype == b.dtype and a.shape == b.shape == (len(texts), sequence_length), key
                np.testing.assert_array_equal(a, b, err_msg=key)
    lengths = np.array([len(ids) for ids in reference.tokenizer(texts)])  # eager: lists of ids
    assert (lengths > sequence_length - 2).sum() >= (10 if sequence_length == 64 else 300)  # truncation is exercised


def test_scalar_input_config_round_trip_and_bad_arguments(tokenizer):
    packer = BertSingleSegmentPreprocessor(tokenizer, sequence_length=6)
    one = packer(tf.constant("a fine film"))
    assert {k: tuple(v.shape) for k, v in one.items()} == {"token_ids": (6,), "segment_ids": (6,), "padding_mask": (6,)}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(packer))
    assert type(clone.tokenizer) is type(tokenizer) and clone.sequence_length == 6
    clone.tokenizer.set_vocabulary(tokenizer.get_vocabulary())  # keras-hub keeps vocabularies out of configs
    np.testing.assert_array_equal(clone(tf.constant(["a fine film"]))["token_ids"], packer(tf.constant(["a fine film"]))["token_ids"])
    with pytest.raises(ValueError, match="`sequence_length` must be at least 2"):
        BertSingleSegmentPreprocessor(tokenizer, sequence_length=1)
    with pytest.raises(ValueError, match=r"`text` must be a string or a \(batch,\) string tensor"):
        packer(tf.constant([["a"]]))
