"""Tokenizers that reproduce a checkpoint's own tokenizer exactly, in TensorFlow ops."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text


@keras.saving.register_keras_serializable(package="bigkeras")
class HuggingFaceBertTokenizer(keras_hub.models.BertTokenizer):
    """keras-hub's ``BertTokenizer`` with Hugging Face's ``BertNormalizer`` in front.

    keras-hub lower-cases with ``case_fold_utf8``, an NFKC case fold: it turns "…" into "...",
    "ﬁ" into "fi" and recomposes the Hangul jamo that accent stripping decomposed, where
    Hugging Face's BERT tokenizer only lower-cases. This layer normalises text the Hugging
    Face way (whitespace to spaces, control characters dropped, accents stripped after NFD,
    then a plain lower-case) and hands keras-hub text it leaves alone, so the ids equal the
    checkpoint's ``tokenizer.json`` ids. Everything runs in TF ops, inside a SavedModel too.

    Args:
        vocabulary: list of str or a ``vocab.txt`` path.
        lowercase: bool, lower-case the text. Default True.
        strip_accents: bool, remove accents (Hugging Face's default follows ``lowercase``).
        **kwargs: ``keras_hub.models.BertTokenizer`` arguments.

    Example:
        >>> tokenizer = HuggingFaceBertTokenizer(vocabulary="vocab.txt", lowercase=True, strip_accents=True)
    """

    def __init__(self, vocabulary=None, lowercase: bool = True, strip_accents: bool = True, **kwargs):
        self.text_lowercase, self.text_strip_accents = bool(lowercase), bool(strip_accents)
        super().__init__(vocabulary=vocabulary, lowercase=False, strip_accents=False, **kwargs)

    def normalize(self, text):
        """Hugging Face ``BertNormalizer`` on a string tensor (Chinese characters are split
        by keras-hub's own CJK rule, which matches)."""
        text = tf.strings.regex_replace(text, r"[\t\n\r\p{Zs}]", " ")
        text = tf.strings.regex_replace(text, r"[\x{0}\x{fffd}\p{C}]", "")
        if self.text_strip_accents:
            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), r"\p{Mn}", "")
        if self.text_lowercase:
            # Character by character, as Hugging Face does: a word-final capital sigma is σ, not ς.
            text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
        return text

    def tokenize(self, inputs):
        return super().tokenize(self.normalize(tf.convert_to_tensor(inputs)))

    def get_config(self):
        config = super().get_config()
        config.update(lowercase=self.text_lowercase, strip_accents=self.text_strip_accents)
        return config
