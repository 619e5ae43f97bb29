"""BERT inputs for one text segment, packed with TensorFlow core ops only.

keras-hub's ``BertTextClassifierPreprocessor`` truncates with TF Text's ``RoundRobinTrimmer``,
which puts the op ``TFText>RoundRobinTrim`` in an exported graph. TF Serving 2.14 to 2.19 link
TF Text 2.12.1, which has no such op (``bigkeras.serving.compatibility``), so those servers
cannot load the export. For a single segment, round-robin trimming is plain truncation, so
this layer packs ``[CLS] tokens [SEP]`` with slicing and concatenation instead: the same
outputs, and only the tokenizer's own ops (RegexSplitWithOffsets,
FastWordpieceTokenizeWithOffsets, CaseFoldUTF8, NormalizeUTF8) come from TF Text.

    preprocess = BertSingleSegmentPreprocessor(tokenizer, sequence_length=64)
    preprocess(tf.constant(["a fine film"]))  # {"token_ids", "segment_ids", "padding_mask"}
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bigkeras import checks


@keras.saving.register_keras_serializable(package="bigkeras")
class BertSingleSegmentPreprocessor(keras.layers.Layer):
    """Strings to BERT inputs, as ``BertTextClassifierPreprocessor`` packs one segment.

    Each string is tokenized, cut to ``sequence_length - 2`` tokens, wrapped as
    ``[CLS] tokens [SEP]`` and padded with ``[PAD]`` to ``sequence_length``; ``segment_ids``
    are all 0 and ``padding_mask`` marks the tokens that are not ``[PAD]``. The outputs equal
    keras-hub's ``BertTextClassifierPreprocessor(tokenizer, sequence_length)`` (int32 ids,
    bool mask), but the packing uses TensorFlow core ops only, so an export that contains
    this layer loads on TF Serving releases whose TF Text lacks ``TFText>RoundRobinTrim``.
    Eager calls run the same TensorFlow graph as an export (keras-hub's eager path is Python).

    Args:
        tokenizer: a keras-hub ``BertTokenizer`` (or any WordPiece tokenizer with ``[CLS]``,
            ``[SEP]`` and ``[PAD]`` tokens) mapping strings to ragged int ids.
        sequence_length: int, the packed length, at least 2. Default 512.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Example:
        >>> tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
        >>> preprocess = BertSingleSegmentPreprocessor(tokenizer, sequence_length=64)
        >>> preprocess(tf.constant(["a fine film"]))["token_ids"].shape
        TensorShape([1, 64])
    """

    def __init__(self, tokenizer, sequence_length: int = 512, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("sequence_length", sequence_length)
        if sequence_length < 2:
            raise ValueError(f"`sequence_length` must be at least 2 ([CLS] and [SEP]), got {sequence_length}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        if getattr(tokenizer, "vocabulary", None) is not None:  # from_config: the vocabulary comes later
            self._special_ids()
        # Keras must not convert the string input to a backend tensor, nor reject a list of str.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self._pack_fn = None
        self.built = True

    def call(self, text):
        text = tf.convert_to_tensor(text, tf.string)
        if text.shape.rank not in (0, 1):
            raise ValueError(f"`text` must be a string or a (batch,) string tensor, got shape {text.shape}.")
        unbatched = text.shape.rank == 0
        if unbatched:
            text = text[tf.newaxis]
        if tf.inside_function():
            outputs = self._pack(text)
        else:  # eager: run the graph an export runs, not keras-hub's Python path
            if self._pack_fn is None:
                self._pack_fn = tf.function(self._pack, input_signature=[tf.TensorSpec([None], tf.string)])
            outputs = self._pack_fn(text)
        return {k: v[0] for k, v in outputs.items()} if unbatched else outputs

    def _special_ids(self) -> tuple[int, int, int]:
        ids = []
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            try:
                ids.append(int(self.tokenizer.token_to_id(token)))
            except (AttributeError, KeyError, ValueError) as err:
                raise ValueError(f"`tokenizer` must have a {token} token; token_to_id({token!r}) failed: {err}") from err
        return tuple(ids)

    def _pack(self, text):  # (batch,) strings -> dict of (batch, sequence_length)
        cls_id, sep_id, pad_id = self._special_ids()
        ids = self.tokenizer(text)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.cast(ids, tf.int32)[:, : self.sequence_length - 2]  # (batch, <= length - 2)
        rows = ids.nrows()
        cls = tf.fill(tf.stack([rows, 1]), cls_id)
        sep = tf.fill(tf.stack([rows, 1]), sep_id)
        packed = tf.concat([cls, ids, sep], axis=1)  # ragged (batch, <= length)
        token_ids = packed.to_tensor(default_value=pad_id, shape=[None, self.sequence_length])
        return {
            "token_ids": token_ids,  # (batch, length) int32
            "segment_ids": tf.zeros_like(token_ids),  # one segment: all 0, padding too
            "padding_mask": token_ids != pad_id,  # (batch, length) bool, as keras-hub computes it
        }

    def get_config(self):
        config = super().get_config()
        config.update(tokenizer=keras.saving.serialize_keras_object(self.tokenizer), sequence_length=self.sequence_length)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tokenizer"] = keras.saving.deserialize_keras_object(config["tokenizer"])
        return cls(**config)
