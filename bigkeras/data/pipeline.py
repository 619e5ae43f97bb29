"""tf.data pipelines from loaded arrays, and text vocabularies fitted on training texts only.

The training harness batches *unbatched* datasets itself (with the global batch size of its
distribution strategy), so ``from_arrays`` returns one example per element; ``batched``
is for evaluation and everything else.

    x, y = data.load("fashion_mnist").train
    train = from_arrays(x, y, shuffle=True)       # unbatched, cached, reshuffled each epoch
    test = batched(from_arrays(*data.load("fashion_mnist").test), 256)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from bigkeras import checks
from bigkeras.data.base import SEED

WORDPIECE_RESERVED = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")


def from_arrays(
    x,
    y=None,
    sample_weight=None,
    *,
    map_fn: Callable | None = None,
    cache: bool | str = True,
    shuffle: bool | int = False,
    seed: int = SEED,
    reshuffle_each_iteration: bool = True,
) -> tf.data.Dataset:
    """An unbatched ``tf.data.Dataset`` of ``(features, label[, weight])`` from in-memory arrays.

    Order of the stages: slices -> ``map_fn`` -> cache -> shuffle. Deterministic
    preprocessing goes in ``map_fn`` so it runs once and is cached; random augmentation
    (``augment_images``) goes after this, so each epoch differs.

    Args:
        x: features: an array (images, token ids), a list/array of ``str``, or a dict of
            arrays for multi-input models.
        y: labels or targets aligned with ``x``; ``None`` for features-only elements.
        sample_weight: optional weights aligned with ``y`` (per example, or per target
            position such as a padding mask), the third element Keras weights the loss by.
        map_fn: applied per element (``map_fn(x, y[, w])`` or ``map_fn(x)``) before caching.
        cache: ``True`` caches in memory after the first pass, a path caches to files
            there, ``False`` does not cache.
        shuffle: ``True`` shuffles with a buffer holding the whole dataset, an int sets
            the buffer size, ``False`` keeps the order.
        seed: shuffle seed; the same seed gives the same sequence of epochs.
        reshuffle_each_iteration: draw a new order every epoch (else the same each time).

    Returns:
        The unbatched dataset.

    Example:
        >>> ds = from_arrays(np.zeros((4, 2)), np.arange(4), shuffle=True)
        >>> ds.element_spec
        (TensorSpec(shape=(2,), dtype=tf.float64, name=None), TensorSpec(shape=(), dtype=tf.int64, name=None))
    """
    features = _tensor_ready(x)
    n = len(next(iter(features.values()))) if isinstance(features, dict) else len(features)
    if n == 0:
        raise ValueError("`x` must hold at least one example, got an empty array.")
    if y is not None and len(y) != n:
        raise ValueError(f"`y` must have the same length as `x` ({n}), got {len(y)}.")
    if sample_weight is not None and (y is None or len(sample_weight) != n):
        raise ValueError(f"`sample_weight` needs `y` and the same length as `x` ({n}), got {len(sample_weight)}.")
    parts = tuple(_tensor_ready(a) for a in (y, sample_weight) if a is not None)
    ds = tf.data.Dataset.from_tensor_slices((features, *parts) if parts else features)
    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    if shuffle:
        buffer = n if shuffle is True else checks.positive_int("shuffle", shuffle)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration)
    return ds


def batched(
    dataset: tf.data.Dataset, batch_size: int, *, drop_remainder: bool = False, prefetch: bool = True
) -> tf.data.Dataset:
    """Batch an unbatched dataset and prefetch (for evaluation, prediction, vocabularies).

    Args:
        dataset: an unbatched dataset, e.g. from ``from_arrays``.
        batch_size: examples per batch.
        drop_remainder: drop a last, smaller batch (static batch shapes, e.g. for TPUs).
        prefetch: overlap producing the next batch with consuming this one.

    Returns:
        The batched dataset.
    """
    ds = dataset.batch(checks.positive_int("batch_size", batch_size), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def augment_images(
    dataset: tf.data.Dataset, *, flip: bool = True, translate: float = 0.1, seed: int = SEED
) -> tf.data.Dataset:
    """Random horizontal flips and shifts of each training image, a new draw every epoch.

    Uses Keras core preprocessing layers (keras-cv is frozen upstream; its authors point to
    these). Apply it after ``from_arrays`` (after the cache), to the training split only.

    Args:
        dataset: an unbatched dataset of ``(image, label)`` with float ``(h, w, c)`` images.
        flip: bool, flip left-right with probability 1/2 (label-preserving for clothes, CIFAR).
        translate: float in [0, 1), the largest shift as a fraction of height and width;
            the uncovered border is filled with zeros, like the paper's 4-pixel padded crops.
        seed: int, the seed of the random draws.

    Returns:
        The augmented unbatched dataset.

    Example:
        >>> train = augment_images(from_arrays(x, y, map_fn=scale, shuffle=True))
    """
    checks.fraction("translate", translate)
    steps = [keras.layers.RandomFlip("horizontal", seed=seed)] if flip else []
    if translate:
        steps.append(keras.layers.RandomTranslation(translate, translate, fill_mode="constant", seed=seed))
    if not steps:
        return dataset
    augment = keras.Sequential(steps, name="augment")
    return dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)


def text_vectorizer(
    train_texts,
    *,
    max_tokens: int = 20_000,
    sequence_length: int | None = None,
    output_mode: str = "int",
    standardize: str | Callable | None = "lower_and_strip_punctuation",
    split: str | Callable | None = "whitespace",
    ngrams: int | None = None,
) -> keras.layers.TextVectorization:
    """A ``keras.layers.TextVectorization`` adapted on the training texts (only those).

    Fit the vocabulary on ``train`` alone: adapting on test texts would leak their words
    (and, for ``"tf_idf"``, their statistics) into the model.

    Args:
        train_texts: the training texts (a list or array of ``str``).
        max_tokens: vocabulary size, including the padding and OOV tokens.
        sequence_length: pad or truncate ``"int"`` outputs to this length; ``None`` pads
            each batch to its longest text.
        output_mode: ``"int"``, ``"multi_hot"``, ``"count"`` or ``"tf_idf"``.
        standardize: as in ``TextVectorization``.
        split: as in ``TextVectorization`` (``"character"`` for character-level models).
        ngrams: as in ``TextVectorization``.

    Returns:
        The adapted layer; ``layer.vocabulary_size()`` is at most ``max_tokens``.

    Example:
        >>> vectorize = text_vectorizer(data.load("rotten_tomatoes").train.x, sequence_length=64)
        >>> vectorize(["a gripping film"]).shape
        TensorShape([1, 64])
    """
    checks.one_of("output_mode", output_mode, ("int", "multi_hot", "count", "tf_idf"))
    if sequence_length is not None:
        checks.positive_int("sequence_length", sequence_length)
    layer = keras.layers.TextVectorization(
        max_tokens=checks.positive_int("max_tokens", max_tokens),
        output_sequence_length=sequence_length,
        output_mode=output_mode,
        standardize=standardize,
        split=split,
        ngrams=ngrams,
    )
    layer.adapt(_text_batches(train_texts))
    return layer


def wordpiece_tokenizer(
    train_texts,
    *,
    vocabulary_size: int,
    sequence_length: int | None = None,
    lowercase: bool = True,
    strip_accents: bool = False,
    reserved_tokens: Sequence[str] = WORDPIECE_RESERVED,
):
    """A keras-hub WordPiece tokenizer whose vocabulary is trained on the training texts only.

    Wu et al., "Google's Neural Machine Translation System", 2016 (WordPiece); trained with
    ``keras_hub.tokenizers.compute_word_piece_vocabulary``. Training the vocabulary and
    tokenizing share ``lowercase`` and ``strip_accents`` here, so they cannot disagree.
    The learner (TF Text's) is pure Python and slow: about 90 s for the 10,202 review
    snippets on 2 busy CPU cores; a few thousand texts give a similar vocabulary faster.

    Args:
        train_texts: the training texts (a list or array of ``str``).
        vocabulary_size: the most tokens in the vocabulary, reserved tokens included.
        sequence_length: pad or truncate token ids to this length; ``None`` for ragged.
        lowercase: lower-case before splitting (for training and tokenizing alike).
        strip_accents: strip accents before splitting.
        reserved_tokens: special tokens placed first, in this order (``[PAD]`` is id 0).

    Returns:
        A ``keras_hub.tokenizers.WordPieceTokenizer``; ``get_vocabulary()`` lists the tokens.
    """
    import keras_hub  # imported here: keras-hub pulls in TF Text, only WordPiece needs it

    reserved = list(reserved_tokens)
    if "[UNK]" not in reserved:
        raise ValueError(f"`reserved_tokens` must include the OOV token '[UNK]', got {reserved!r}.")
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        _text_batches(train_texts),
        checks.positive_int("vocabulary_size", vocabulary_size),
        lowercase=lowercase,
        strip_accents=strip_accents,
        reserved_tokens=reserved,
    )
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        sequence_length=sequence_length,
        lowercase=lowercase,
        strip_accents=strip_accents,
        special_tokens=[t for t in reserved if t != "[UNK]"],
    )


def sentencepiece_tokenizer(train_texts, *, vocabulary_size: int, split_digits: bool = True, seed: int = 0):
    """A keras-hub SentencePiece tokenizer trained on the training texts, with T5's special ids.

    Kudo and Richardson, 2018, "SentencePiece" (a unigram language model over pieces, trained
    with the ``sentencepiece`` package that keras-hub depends on). Ids follow T5: 0 is padding
    (and the decoder's start token), 1 the end token ``</s>``, 2 unknown; no start-of-text
    token. The tokenizer runs TF Text's SentencePiece ops in the graph (every TF Serving release
    from 2.14 to 2.21 links them: ``bigkeras.serving.compatibility``).

    Args:
        train_texts: the training texts (a list or array of ``str``).
        vocabulary_size: int, the most pieces (a smaller vocabulary is allowed when the texts
            have fewer distinct pieces).
        split_digits: bool, one piece per digit (numbers are then copied digit by digit).
            Default True.
        seed: int, the trainer's sampling seed. Default 0.

    Returns:
        A ``keras_hub.tokenizers.SentencePieceTokenizer``.

    Example:
        >>> tokenizer = sentencepiece_tokenizer(["4 mars 1998", "1998-03-04"], vocabulary_size=64)
        >>> tokenizer.id_to_token(1)
        '</s>'
    """
    import io

    import keras_hub
    import sentencepiece

    checks.positive_int("vocabulary_size", vocabulary_size)
    if isinstance(train_texts, str) or len(train_texts) == 0:
        raise ValueError(f"`train_texts` must be a non-empty list or array of str, got {train_texts!r:.80}.")
    sentencepiece.set_random_generator_seed(seed)
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(str(t) for t in train_texts), model_writer=proto, vocab_size=vocabulary_size,
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        split_digits=split_digits, minloglevel=2, num_threads=1,
    )
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto.getvalue())


def _text_batches(values, batch_size: int = 1024) -> tf.data.Dataset:
    if isinstance(values, str) or len(values) == 0:
        raise ValueError(f"`train_texts` must be a non-empty list or array of str, got {values!r:.80}.")
    return tf.data.Dataset.from_tensor_slices(_tensor_ready(values)).batch(batch_size)


def _tensor_ready(values):
    """Arrays as tf.data wants them: dicts recursively, texts as bytes-compatible arrays."""
    if isinstance(values, dict):
        return {k: _tensor_ready(v) for k, v in values.items()}
    array = np.asarray(values)
    # Fixed-width unicode ("<U") pads every text to the longest; objects convert without it.
    return array.astype(object) if array.dtype.kind == "U" else array
