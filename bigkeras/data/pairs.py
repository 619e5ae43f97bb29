"""Sequence-to-sequence pairs: German-English sentences and human-readable dates to ISO dates.

``x`` holds the source texts and ``y`` the target texts, both object arrays of ``str``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bigkeras import checks
from bigkeras.data.base import SEED, Data, Split, random_splits, reading, texts

DE_EN_DIR = Path("/usr/share/trans")
_DE_EN_HOW = (
    "Install it with: sudo apt-get install trans-de-en (or `make data`), "
    "or pass data_dir= a folder holding de-en."
)

_SENTENCE_END = re.compile(r"[.!?]$")
_ANNOTATION = re.compile(r"\s*(\[[^\]]*\]|\{[^}]*\}|<[^>]*>)")  # [coll.], {m}, <Aalmolch>
_LEFTOVER_MARKUP = re.compile(r"[\[\]{}<>/(]|\.\.\.|…")  # alternatives (a/b), glosses, ellipses


def de_en(*, data_dir: str | Path | None = None) -> Data:
    """German-English sentence pairs: the example sentences of the Ding dictionary.

    Richter, "Ding: a dictionary lookup program" (dict.tu-chemnitz.de), as packaged by
    Debian's ``trans-de-en`` (``/usr/share/trans/de-en``, 380,000 entries). A pair is kept
    when both sides are one whole sentence (capitalised, ending in . ! or ?) once the
    first of its ``;`` alternatives is taken and ``[usage]``/``{gender}`` notes are
    stripped, and neither side holds ``a/b`` alternatives, parenthesised glosses or
    ellipses; each German sentence is kept once: 16,679 pairs.

    Args:
        data_dir: a folder holding the ``de-en`` dictionary file instead of Debian's.

    Returns:
        ``train`` 15,011, ``validation`` 834 and ``test`` 834 pairs (a seeded 90/5/5
        split), ``x`` German and ``y`` English.

    Example:
        >>> de, en = de_en().train
        >>> de[0], en[0]  # doctest: +SKIP
        ('Kümmere dich nicht um ihn.', 'Never mind him.')
    """
    path = (Path(data_dir) if data_dir is not None else DE_EN_DIR) / "de-en"
    pairs: dict[str, str] = {}  # German -> English, first occurrence wins
    with reading(path, _DE_EN_HOW):
        with path.open(encoding="utf-8") as f:
            for line in f:
                # "de1 | de2 :: en1 | en2": entries separated by " | " translate pairwise.
                german, sep, english = line.rstrip("\n").partition(" :: ")
                if line.startswith("#") or not sep:
                    continue
                for de, en in zip(german.split(" | "), english.split(" | ")):
                    en = _sentence(en)
                    if en and (de := _sentence(de)):
                        pairs.setdefault(de, en)
        if len(pairs) < 1000:
            raise ValueError(
                f"expected a Ding dictionary with over 16,000 example sentences, found {len(pairs)}"
            )
    everything = Split(texts(pairs), texts(pairs.values()))
    return Data("de_en", random_splits(everything, validation=0.05, test=0.05), source=str(path))


def _sentence(entry: str) -> str:
    """The entry's first alternative, without usage notes, if it is a clean sentence; else ""."""
    if not ("." in entry or "!" in entry or "?" in entry):  # cheap reject: most entries are words
        return ""
    text = _ANNOTATION.sub("", entry.split("; ")[0]).strip()
    ok = text[:1].isupper() and _SENTENCE_END.search(text) and not _LEFTOVER_MARKUP.search(text)
    return text if ok else ""


DATE_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL")
# CLDR's named formats plus two patterns. All spell the month or order it unambiguously
# (only de_DE's medium format is numeric, day first) and show four-digit years, so every
# input has exactly one ISO answer; "short" formats ("3/4/98") would not.
DATE_FORMATS = ("full", "long", "medium", "d MMM y", "EEE d MMMM y")


def dates(
    *,
    train_size: int = 20_000,
    test_size: int = 2_000,
    start: datetime.date = datetime.date(1950, 1, 1),
    end: datetime.date = datetime.date(2049, 12, 31),
    test_fraction: float = 0.1,
    locales: Sequence[str] = DATE_LOCALES,
    seed: int = SEED,
) -> Data:
    """Human-readable dates in several languages against ISO 8601 dates, for normalisation.

    Each example renders one calendar day with Babel (CLDR data) in a random locale and
    format: ``"mercredi 4 mars 1998"``, ``"4 de mar. de 1998"``, ``"04.03.1998"`` ->
    ``"1998-03-04"``. The days in [start, end] are first partitioned (a seeded
    ``test_fraction`` of them are test days), so no test date ever occurs in train, in
    any rendering. Deterministic for a given seed and Babel version.

    Args:
        train_size: number of training pairs.
        test_size: number of test pairs.
        start: first day that may appear.
        end: last day that may appear.
        test_fraction: share of the days reserved for test, in (0, 1).
        locales: Babel locale names to render in.
        seed: seed of the day partition and of the sampling.

    Returns:
        ``train`` and ``test`` pairs, ``x`` the human-readable date, ``y`` the ISO date.
    """
    from babel.dates import format_date  # imported here: only this loader needs Babel

    checks.positive_int("train_size", train_size)
    checks.positive_int("test_size", test_size)
    checks.fraction("test_fraction", test_fraction)
    if not (isinstance(start, datetime.date) and isinstance(end, datetime.date) and start < end):
        raise ValueError(f"`start` and `end` must be dates with start < end, got {start!r} and {end!r}.")
    if isinstance(locales, str) or not locales:
        raise ValueError(f"`locales` must be a non-empty sequence of Babel locale names, got {locales!r}.")

    rng = np.random.default_rng(seed)
    days = np.arange(start.toordinal(), end.toordinal() + 1)
    is_test = np.zeros(len(days), dtype=bool)
    is_test[rng.permutation(len(days))[: max(1, round(test_fraction * len(days)))]] = True
    splits = {}
    for split, size, pool in (("train", train_size, days[~is_test]), ("test", test_size, days[is_test])):
        picked = [datetime.date.fromordinal(int(d)) for d in rng.choice(pool, size)]
        styles = rng.integers(len(locales), size=size), rng.integers(len(DATE_FORMATS), size=size)
        human = [format_date(d, DATE_FORMATS[f], locale=locales[loc]) for d, loc, f in zip(picked, *styles)]
        splits[split] = Split(texts(human), texts([d.isoformat() for d in picked]))
    return Data("dates", splits, source=f"Babel CLDR renderings of {start}..{end} in {', '.join(locales)}")
