"""GPT-2 style byte-level BPE: a vocabulary learned on training text, for keras-hub's tokenizer.

Radford et al., 2019, "Language Models are Unsupervised Multitask Learners" (section 2.2):
the text's UTF-8 bytes, each mapped to a printable character, are merged pairwise by
frequency, so every string can be encoded (no unknown token) and every token stands for a
fixed run of bytes. The merges are learned with the ``tokenizers`` library (a keras-hub
dependency) and written as ``vocab.json`` + ``merges.txt``, the files keras-hub's
``BytePairTokenizer`` reads (and GPT-2 ships); that tokenizer then runs eagerly for data and
in the graph of a ``generate`` export.

    tokenizer = byte_pair_tokenizer(train_texts, vocabulary_size=4096, directory="runs/x/tokenizer")
    ids = tokenizer(["In the beginning"])  # [[...]]
    byte_lengths(tokenizer)[ids[0]].sum()  # 16: the UTF-8 bytes those tokens stand for
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import numpy as np

from bigkeras import checks

END_OF_TEXT = "<|endoftext|>"  # id 0: never in the text, so it serves as padding


def byte_pair_tokenizer(
    train_texts,
    *,
    vocabulary_size: int,
    min_frequency: int = 2,
    directory: str | os.PathLike | None = None,
):
    """A keras-hub ``BytePairTokenizer`` whose merges are learned on ``train_texts`` only.

    Args:
        train_texts: the training texts (a list or array of ``str``).
        vocabulary_size: int, the most tokens: ``END_OF_TEXT`` (id 0), the 256 byte
            tokens, then merges. At least 257.
        min_frequency: int, the fewest occurrences of a pair worth a merge. Default 2.
        directory: optional folder to keep ``vocab.json`` and ``merges.txt`` in (made if
            missing); default a temporary folder that is removed.

    Returns:
        A ``keras_hub.tokenizers.BytePairTokenizer`` (vocabulary and merges held in memory).

    Example:
        >>> tokenizer = byte_pair_tokenizer(["the the then"] * 50, vocabulary_size=260)
        >>> tokenizer.vocabulary_size()
        260
    """
    import keras_hub
    import tokenizers

    checks.positive_int("vocabulary_size", vocabulary_size)
    if vocabulary_size < 257:
        raise ValueError(
            f"`vocabulary_size` must be at least 257 (end-of-text plus 256 bytes), got {vocabulary_size}."
        )
    checks.positive_int("min_frequency", min_frequency)
    if isinstance(train_texts, str) or len(train_texts) == 0:
        raise ValueError(f"`train_texts` must be a non-empty list or array of str, got {train_texts!r:.80}.")
    learner = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    learner.train_from_iterator((str(t) for t in train_texts), vocab_size=vocabulary_size,
                                min_frequency=min_frequency, special_tokens=[END_OF_TEXT], show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(directory or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        learner.save_model(str(folder))  # vocab.json, merges.txt
        vocabulary, merges = read_files(folder)
    return keras_hub.tokenizers.BytePairTokenizer(vocabulary=vocabulary, merges=merges)


def read_files(directory: str | os.PathLike) -> tuple[dict[str, int], list[str]]:
    """``vocab.json`` and ``merges.txt`` from ``directory``: ``(vocabulary, merges)``.

    The ``#version`` header line of ``merges.txt`` is left out.
    """
    folder = pathlib.Path(directory)
    vocabulary = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines if line and not line.startswith("#version")]
    return vocabulary, merges


def byte_lengths(tokenizer) -> np.ndarray:
    """How many UTF-8 bytes each token id of a byte-level BPE tokenizer stands for.

    Args:
        tokenizer: a keras-hub ``BytePairTokenizer`` (or anything with ``get_vocabulary()``
            and ``token_to_id``) over GPT-2's byte-to-character map.

    Returns:
        int64 array ``(vocabulary_size,)``; special tokens such as ``END_OF_TEXT``, whose
        characters are not all byte characters, count 0.
    """
    chars = set(byte_to_char().values())
    lengths = np.zeros(tokenizer.vocabulary_size(), np.int64)
    for token in tokenizer.get_vocabulary():
        if all(c in chars for c in token):
            lengths[tokenizer.token_to_id(token)] = len(token)  # one character per byte
    return lengths


def byte_to_char() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (``bytes_to_unicode`` in its encoder.py).

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, ...) to
    ``chr(256 + k)`` in byte order, so a space is ``"Ġ"`` and a newline ``"Ċ"``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for k, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + k)
    return dict(sorted(table.items()))
