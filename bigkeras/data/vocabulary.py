"""Learned vocabularies as files: learn with the recipes' own learners, write, load back.

The learners are the ones recipes call (``bpe.byte_pair_tokenizer``,
``pipeline.wordpiece_tokenizer``, ``pipeline.sentencepiece_tokenizer``); this module only
puts their result in files a tokenizer can be rebuilt from in another process (a Beam
worker, a recipe reading a prepared dataset):

    kind      files                     learner
    bpe       vocab.json, merges.txt    bpe.byte_pair_tokenizer
    wordpiece vocab.txt                 pipeline.wordpiece_tokenizer
    sentencepiece  spiece.model         pipeline.sentencepiece_tokenizer
"""

from __future__ import annotations

import functools
from pathlib import Path

from bigkeras import checks

KINDS = ("bpe", "wordpiece", "sentencepiece")


def learn(kind: str, texts, directory: str | Path, *, vocabulary_size: int) -> dict:
    """Learn a ``kind`` vocabulary on ``texts`` and write its files into ``directory``.

    Args:
        kind: ``"bpe"``, ``"wordpiece"`` or ``"sentencepiece"``.
        texts: the training texts (a list of ``str``), in a fixed order.
        directory: the folder for the files (made if missing).
        vocabulary_size: int, the most tokens.

    Returns:
        ``{"kind", "files", "options", "vocabulary_size"}``: ``load(kind, directory, **options)``
        rebuilds the tokenizer.
    """
    from bigkeras.data import bpe, pipeline

    checks.one_of("vocabulary", kind, KINDS)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    options = {}
    if kind == "bpe":
        tokenizer = bpe.byte_pair_tokenizer(texts, vocabulary_size=vocabulary_size, directory=folder)
        files = ["vocab.json", "merges.txt"]
    elif kind == "wordpiece":
        options = {"lowercase": True, "strip_accents": False}
        tokenizer = pipeline.wordpiece_tokenizer(texts, vocabulary_size=vocabulary_size, **options)
        (folder / "vocab.txt").write_text("\n".join(tokenizer.get_vocabulary()) + "\n", encoding="utf-8")
        files = ["vocab.txt"]
    else:
        tokenizer = pipeline.sentencepiece_tokenizer(texts, vocabulary_size=vocabulary_size)
        (folder / "spiece.model").write_bytes(tokenizer.proto)
        files = ["spiece.model"]
    return {"kind": kind, "files": files, "options": options, "vocabulary_size": tokenizer.vocabulary_size()}


def load(kind: str, directory: str | Path, **options):
    """The keras-hub tokenizer of a vocabulary written by ``learn``."""
    import keras_hub

    from bigkeras.data import bpe, pipeline

    folder = Path(directory)
    checks.one_of("vocabulary", kind, KINDS)
    if kind == "bpe":
        vocabulary, merges = bpe.read_files(folder)
        return keras_hub.tokenizers.BytePairTokenizer(vocabulary=vocabulary, merges=merges)
    if kind == "wordpiece":
        return keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=str(folder / "vocab.txt"),
            special_tokens=[t for t in pipeline.WORDPIECE_RESERVED if t != "[UNK]"],
            **options,
        )
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=(folder / "spiece.model").read_bytes())


def loader(kind: str, directory: str | Path, **options):
    """A picklable no-argument function that rebuilds the tokenizer (for Beam workers)."""
    return functools.partial(load, kind, str(directory), **options)
