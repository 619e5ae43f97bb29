"""Datasets prepared into sharded TFRecords (by ``bigkeras prepare``), read back for training.

A prepared dataset is a folder: ``{split}-00000-of-0000N.tfrecord`` shards and a
``{split}.spec.json`` per split (what ``read_tfrecords`` reads), an optional ``vocabulary/``
folder, and ``dataset.json``, the manifest, written last: a folder without it is not a
finished dataset. ``load_prepared`` gives a :class:`PreparedData`, a ``Data`` whose splits
stream from the shards (``split.dataset()``) and, for code written for in-memory splits,
read themselves into numpy on first use of ``x``/``y``.

    prepared = load_prepared("/data/reviews")          # or recipes: --data tfrecords:/data/reviews
    ds = prepared["train"].dataset(x=("token_ids", "padding_mask"), y="label", shuffle=True)
    x_test, y_test = prepared.test                     # numpy, read from the shards
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bigkeras import checks
from bigkeras.data.base import SEED, Data, DataFileError, Split, texts

MANIFEST = "dataset.json"
PREFIX = "tfrecords:"
SHUFFLE_BUFFER = 10_000  # examples held for shuffling a streamed split
_HOW = "Prepare it with: bigkeras prepare OUTPUT --split train=PATTERN ... (see the README)."


class PreparedSplit:
    """One split of a prepared dataset: shards on disk, streamed or read into memory.

    Attributes:
        prefix: the shard prefix (``read_tfrecords(prefix)`` reads it).
        features: ``{name: tf.TensorSpec}`` of one example.
        num_examples: examples in the shards (before ``limit``).
    """

    def __init__(self, prefix: Path, x: str | None, y: str | None, limit: int | None = None):
        from bigkeras.data.tfrecords import read_spec

        self.prefix, self._x, self._y, self.limit = prefix, x, y, limit
        spec = read_spec(prefix)
        self.features, self.num_examples = spec["features"], int(spec["num_examples"])
        self._arrays = None

    def __len__(self) -> int:
        return self.num_examples if self.limit is None else min(self.num_examples, self.limit)

    def limited(self, limit: int) -> PreparedSplit:
        """The same shards, read only up to ``limit`` examples (``--smoke``)."""
        return PreparedSplit(self.prefix, self._x, self._y, checks.positive_int("limit", limit))

    def dataset(
        self,
        *,
        x: str | Sequence[str] | None = None,
        y: str | None = None,
        shuffle: bool = False,
        num_workers: int = 1,
        worker_index: int = 0,
        seed: int = SEED,
    ):
        """The split as an unbatched ``tf.data.Dataset`` read from the shards, never all in memory.

        Args:
            x: a feature name (its tensor is the model input), a sequence of names (a dict
                of those), or None for every feature as a dict (then ``y`` must be None).
            y: the label feature, or None for features only.
            shuffle: shuffle through a buffer of ``SHUFFLE_BUFFER`` examples, reshuffled
                each epoch.
            num_workers, worker_index: read only this worker's shards (``read_tfrecords``);
                with the default 1, ``MultiWorkerMirroredStrategy`` gives each worker
                whole files (auto-sharding by file).
            seed: the shuffle seed.

        Returns:
            A dataset of ``features`` or ``(features, label)``.
        """
        from bigkeras.data.tfrecords import read_tfrecords

        for name in ([x] if isinstance(x, str) else list(x or ())) + ([y] if y else []):
            checks.one_of("feature", name, self.features)
        import tensorflow as tf

        ds = read_tfrecords(self.prefix, num_workers=num_workers, worker_index=worker_index)
        if self.limit is not None:
            ds = ds.take(self.limit)
        if num_workers == 1:  # the spec's count, so train() knows the steps per epoch
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(self)))
        if shuffle:
            ds = ds.shuffle(min(len(self), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)

        def select(example):
            features = example if x is None else example[x] if isinstance(x, str) else {k: example[k] for k in x}
            return features if y is None else (features, example[y])

        return ds.map(select)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every feature as a numpy array (read once, then kept); texts as ``str`` objects."""
        if self._arrays is None:
            import tensorflow as tf

            columns = {k: [] for k in self.features}
            for batch in self.dataset().batch(1024).as_numpy_iterator():
                for k, v in batch.items():
                    columns[k].append(v)
            self._arrays = {
                k: _column(np.concatenate(v) if v else np.zeros((0, *self.features[k].shape)),
                           self.features[k].dtype == tf.string)
                for k, v in columns.items()
            }
        return self._arrays

    @property
    def x(self) -> np.ndarray:
        """The split's inputs as the in-memory loaders return them (texts, uint8 images, sources)."""
        return self.arrays()[self._feature("x", self._x)]

    @property
    def y(self) -> np.ndarray:
        """The split's labels (int32 class ids) or targets (texts)."""
        return self.arrays()[self._feature("y", self._y)]

    def __iter__(self):
        return iter((self.x, self.y))

    def take(self, indices) -> Split:
        """The examples at ``indices`` as an in-memory :class:`Split`."""
        return Split(self.x[indices], self.y[indices])

    def _feature(self, role: str, name: str | None) -> str:
        if name is None:
            raise ValueError(
                f"{self.prefix}: this prepared dataset has no `{role}` feature (features: "
                f"{sorted(self.features)}); read it with split.dataset() or split.arrays()."
            )
        return name


def _column(values: np.ndarray, is_text: bool) -> np.ndarray:
    if is_text:
        return texts([v.decode("utf-8") for v in values])
    return values.astype(np.int32) if values.dtype == np.int64 else values


@dataclasses.dataclass(frozen=True)
class PreparedData(Data):
    """A ``Data`` read from a prepared folder: its splits are :class:`PreparedSplit` objects.

    Attributes:
        path: the folder.
        manifest: ``dataset.json``: task, features, preprocessing, vocabulary, counts.
    """

    path: Path = Path()
    manifest: Mapping = dataclasses.field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        """The feature names every example has (``token_ids``, ``label``, ``image``, ...)."""
        return tuple(self.manifest.get("features", {}))

    @property
    def preprocessing(self) -> Mapping:
        """How the examples were made: tokenizer, sequence length, image size, ..."""
        return self.manifest.get("preprocessing", {})

    def limited(self, sizes: Mapping[str, int], default: int = 64) -> PreparedData:
        """Each split read only up to ``sizes[split]`` examples (``--smoke``)."""
        splits = {k: s.limited(sizes.get(k, default)) for k, s in self.splits.items()}
        return dataclasses.replace(self, splits=splits)

    def require(self, **settings) -> None:
        """Raise unless the preprocessing recorded in the manifest has these ``settings``."""
        for key, want in settings.items():
            got = self.preprocessing.get(key)
            if got != want:
                raise ValueError(
                    f"The prepared dataset {self.path} was made with {key}={got!r}; this recipe needs "
                    f"{key}={want!r}. Prepare it again with that setting."
                )

    def vocabulary_dir(self) -> Path:
        """The folder holding the vocabulary learned during preparation."""
        vocabulary = self.manifest.get("vocabulary") or {}
        if not vocabulary.get("directory"):
            raise ValueError(f"The prepared dataset {self.path} has no learned vocabulary (see dataset.json).")
        return self.path / vocabulary["directory"]

    def tokenizer(self):
        """The keras-hub tokenizer of the vocabulary learned during preparation (BPE, WordPiece
        or SentencePiece), the one that made the shards' token ids."""
        from bigkeras.data import vocabulary

        return vocabulary.load(self.manifest["vocabulary"]["kind"], self.vocabulary_dir(),
                               **self.manifest["vocabulary"].get("options", {}))


def is_prepared(name) -> bool:
    """Whether a ``--data`` value names a prepared dataset (``tfrecords:PATH``)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def load_prepared(path: str | Path) -> PreparedData:
    """Open a folder written by ``bigkeras prepare`` (``tfrecords:`` in front is accepted).

    Args:
        path: the output folder of the preparation.

    Returns:
        A :class:`PreparedData` (no examples are read yet).

    Raises:
        DataFileError: the folder has no ``dataset.json`` (missing, or a preparation that did
            not finish), or a spec or shard is missing.
    """
    path = Path(str(path)[len(PREFIX):] if is_prepared(str(path)) else path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DataFileError(
            f"{manifest_path} is missing: {path} is not a finished prepared dataset "
            f"(a preparation writes it last). {_HOW}"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        roles = manifest.get("roles", {})
        splits = {k: PreparedSplit(path / k, roles.get("x"), roles.get("y")) for k in manifest["splits"]}
    except (ValueError, KeyError, TypeError) as e:
        raise DataFileError(f"{manifest_path} is corrupt ({type(e).__name__}: {e}). {_HOW}") from e
    return PreparedData(
        name=manifest.get("name") or path.name,
        splits=splits,
        class_names=tuple(manifest.get("class_names", ())),
        source=str(path),
        path=path,
        manifest=manifest,
    )
