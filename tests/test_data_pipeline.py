"""tf.data pipelines: unbatched (features, label) elements, seeded shuffling, caching, batching,
and text vocabularies fitted on the training texts only."""

from __future__ import annotations

import string

import numpy as np
import pytest
import tensorflow as tf

from bigkeras import data

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _labels(ds):
    return [int(y) for _, y in ds.as_numpy_iterator()]


def test_from_arrays_is_unbatched_and_keeps_dtypes():
    x, y = data.load("digits").test
    ds = data.from_arrays(x, y)
    assert ds.element_spec == (tf.TensorSpec((8, 8, 1), tf.uint8), tf.TensorSpec((), tf.int32))
    first_x, first_y = next(iter(ds))
    np.testing.assert_array_equal(first_x, x[0])
    assert int(first_y) == y[0] and _labels(ds) == y.tolist()  # no shuffle: the same order


def test_texts_become_tf_strings():
    texts = np.array(["ünïcode review", "a second, longer review"], dtype=object)
    ds = data.from_arrays(texts, np.array([1, 0]))
    assert ds.element_spec[0] == tf.TensorSpec((), tf.string)
    assert [t.decode() for t, _ in ds.as_numpy_iterator()] == list(texts)
    features_only = data.from_arrays(["one", "two"])
    assert features_only.element_spec == tf.TensorSpec((), tf.string)


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    y = np.arange(200)
    ds = data.from_arrays(y, y, shuffle=True, seed=7)
    epoch1, epoch2 = _labels(ds), _labels(ds)
    assert sorted(epoch1) == y.tolist() and epoch1 != y.tolist()  # a permutation, not the identity
    assert epoch1 != epoch2  # a new order every epoch
    assert _labels(data.from_arrays(y, y, shuffle=True, seed=7)) == epoch1  # same seed, same run
    assert _labels(data.from_arrays(y, y, shuffle=True, seed=8)) != epoch1
    fixed = data.from_arrays(y, y, shuffle=True, seed=7, reshuffle_each_iteration=False)
    assert _labels(fixed) == _labels(fixed)


def test_map_fn_runs_once_before_the_cache(tmp_path):
    calls = []

    def scale(x, y):  # counts its calls in Python, so a cached epoch shows as no new calls
        x = tf.py_function(lambda v: calls.append(1) or v / 255, [tf.cast(x, tf.float32)], tf.float32)
        return tf.ensure_shape(x, (2, 2, 1)), y

    x = np.full((5, 2, 2, 1), 255, np.uint8)
    y = np.zeros(5, np.int32)
    cached = data.from_arrays(x, y, map_fn=scale)
    for _ in range(3):
        assert [float(a.max()) for a, _ in cached.as_numpy_iterator()] == [1.0] * 5
    assert len(calls) == 5  # epochs 2 and 3 came from the cache
    on_disk = data.from_arrays(x, y, map_fn=scale, cache=tmp_path / "cache")
    list(on_disk), list(on_disk)
    assert len(calls) == 10 and any(tmp_path.glob("cache*.index"))
    uncached = data.from_arrays(x, y, map_fn=scale, cache=False)
    list(uncached), list(uncached)
    assert len(calls) == 20


def test_sample_weights_become_the_third_element():
    features = {"ids": np.arange(6).reshape(3, 2)}
    weights = np.array([[1, 0], [1, 1], [0, 0]], "float32")  # per target position
    x, y, w = next(iter(data.from_arrays(features, np.arange(3), weights).skip(1)))
    np.testing.assert_array_equal(x["ids"], [2, 3])
    assert int(y) == 1
    np.testing.assert_array_equal(w, [1, 1])
    with pytest.raises(ValueError, match="`sample_weight`"):
        data.from_arrays(features, np.arange(3), weights[:2])
    with pytest.raises(ValueError, match="`sample_weight` needs `y`"):
        data.from_arrays(features, None, weights)


def test_batched_and_argument_errors():
    y = np.arange(10)
    batches = list(data.batched(data.from_arrays(y, y), 4).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    dropped = data.batched(data.from_arrays(y, y), 4, drop_remainder=True)
    assert dropped.element_spec[1].shape.as_list() == [4] and len(list(dropped)) == 2
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer, got 0"):
        data.batched(data.from_arrays(y, y), 0)
    with pytest.raises(ValueError, match=r"`y` must have the same length as `x` \(10\), got 9"):
        data.from_arrays(y, y[:9])
    with pytest.raises(ValueError, match="`shuffle` must be a positive integer, got -1"):
        data.from_arrays(y, y, shuffle=-1)


def test_text_vectorizer_learns_from_train_only():
    reviews = data.load("rotten_tomatoes")
    vectorize = data.text_vectorizer(reviews.train.x, max_tokens=5_000, sequence_length=32)
    vocabulary = vectorize.get_vocabulary()
    assert len(vocabulary) == 5_000 and vocabulary[:2] == ["", "[UNK]"]
    assert vectorize(["the film"]).shape == (1, 32)

    def words(texts):  # TextVectorization's default standardisation, then whitespace split
        return {w for t in texts for w in t.lower().translate(_NO_PUNCTUATION).split()}

    test_only = sorted(w for w in words(reviews.test.x) - words(reviews.train.x) if w.isalpha())
    assert test_only and not set(test_only) & set(vocabulary)
    assert vectorize([test_only[0]]).numpy()[0, 0] == 1  # out of vocabulary
    multi_hot = data.text_vectorizer(["good film", "bad film"], output_mode="multi_hot")
    assert sorted(multi_hot.get_vocabulary()) == ["[UNK]", "bad", "film", "good"]
    present = [int(token in ("[UNK]", "good")) for token in multi_hot.get_vocabulary()]
    assert multi_hot(["good good zebra"]).numpy().tolist() == [present]  # zebra counts as [UNK]


def test_wordpiece_tokenizer_trains_on_the_given_texts():
    corpus = [f"the {w} film was {a}" for w in ("first", "second", "third") for a in ("great", "dull")] * 20
    tokenizer = data.wordpiece_tokenizer(corpus, vocabulary_size=60, sequence_length=8)
    vocabulary = tokenizer.get_vocabulary()
    assert vocabulary[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"] and len(vocabulary) <= 60
    ids = tokenizer(["The second film was GREAT"])
    assert ids.shape == (1, 8) and 3 not in ids[0, :5].tolist()  # lowercased, all known pieces
    assert tokenizer.detokenize(ids[:, :5]) == ["the second film was great"]
    assert tokenizer(["zebra"])[0, 0] == 3  # "z" and "b" never occur in the corpus: [UNK]
    with pytest.raises(ValueError, match="`reserved_tokens` must include the OOV token"):
        data.wordpiece_tokenizer(corpus, vocabulary_size=60, reserved_tokens=("[PAD]",))


def test_augment_images_flips_and_shifts_with_a_new_draw_each_epoch():
    import numpy as np

    from bigkeras.data import augment_images, from_arrays

    # A bright left half: a flip moves it right, a shift moves its edge.
    image = np.zeros((8, 16, 16, 1), np.float32)
    image[:, :, :8] = 1.0
    ds = augment_images(from_arrays(image, np.arange(8)), seed=3)
    epoch1 = np.stack([x.numpy() for x, _ in ds])
    epoch2 = np.stack([x.numpy() for x, _ in ds])
    assert epoch1.shape == image.shape
    assert not np.allclose(epoch1, image)  # something moved
    assert not np.allclose(epoch1, epoch2)  # a new draw every epoch
    assert [int(y) for _, y in ds] == list(range(8))  # labels untouched
    flipped_only = np.stack([x.numpy() for x, _ in augment_images(from_arrays(image, np.arange(8)), translate=0.0)])
    for x in flipped_only:  # each image is itself or its mirror image
        assert np.allclose(x, image[0]) or np.allclose(x, image[0][:, ::-1])
    plain = from_arrays(image, np.arange(8))
    assert augment_images(plain, flip=False, translate=0.0) is plain  # nothing to do
