"""Sharded TFRecord files: write named arrays to N shards, read them back interleaved.

Shards are named ``{prefix}-00000-of-00004.tfrecord`` (the TFDS/Beam convention) and a
``{prefix}.spec.json`` beside them records each feature's dtype and shape, so reading
needs nothing but the prefix. Examples go to shards round-robin, so reading all shards
interleaved one record at a time gives back the written order exactly; with several
workers, each reads its own subset of the shards.

    paths = write_tfrecords({"image": x, "label": y}, "/data/fashion/train", num_shards=8)
    ds = read_tfrecords("/data/fashion/train", supervised_keys=("image", "label"))
    ds = read_tfrecords("/data/fashion/train", num_workers=4, worker_index=task_id)

Encoding: uint8 arrays (images) as raw bytes, other integers and bools as ``int64_list``,
floats as ``float_list`` (float64 is stored as float32), text as ``bytes_list``. Shapes are
fixed per feature; a scalar text is one ``str``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from bigkeras import checks
from bigkeras.data.base import DataFileError

SHARD_TEMPLATE = "{prefix}-{index:05d}-of-{count:05d}.tfrecord"
SPEC_SUFFIX = ".spec.json"
_COMPRESSIONS = (None, "GZIP", "ZLIB")
_HOW = "Write them with bigkeras.data.write_tfrecords(features, prefix, num_shards=...)."


def shard_paths(prefix: str | Path, num_shards: int) -> list[Path]:
    """The shard file names for ``prefix``: ``prefix-00000-of-0000N.tfrecord``, ..."""
    checks.positive_int("num_shards", num_shards)
    return [Path(SHARD_TEMPLATE.format(prefix=prefix, index=i, count=num_shards)) for i in range(num_shards)]


def feature_spec(features: Mapping[str, np.ndarray]) -> dict[str, tf.TensorSpec]:
    """The per-example spec of named arrays: ``{"image": TensorSpec((28, 28, 1), tf.uint8), ...}``."""
    return {
        k: tf.TensorSpec(v.shape[1:], tf.string if _is_text(v) else tf.as_dtype(v.dtype))
        for k, v in features.items()
    }


def write_tfrecords(
    features: Mapping[str, Sequence] | tf.data.Dataset,
    prefix: str | Path,
    *,
    num_shards: int = 4,
    compression: str | None = None,
) -> list[Path]:
    """Write examples to ``num_shards`` TFRecord files of ``tf.train.Example`` protos.

    Args:
        features: named arrays aligned on the first axis (``{"image": x, "label": y}``;
            texts as lists or object arrays of ``str``), or a finite, unbatched
            ``tf.data.Dataset`` of such dicts (read into memory first).
        prefix: path prefix of the shards; its folder is created.
        num_shards: number of files; use at least as many as the workers that will read.
        compression: ``None``, ``"GZIP"`` or ``"ZLIB"`` (recorded in the spec file).

    Returns:
        The shard paths, in order. ``{prefix}.spec.json`` is written beside them.

    Example:
        >>> paths = write_tfrecords({"text": ["good", "bad"], "label": [1, 0]}, "/tmp/rt/train", num_shards=2)
        >>> [p.name for p in paths]
        ['train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord']
    """
    checks.one_of("compression", compression, _COMPRESSIONS)
    arrays = _as_arrays(features)
    spec = feature_spec(arrays)
    for name, s in spec.items():
        if s.dtype == tf.string and s.shape.rank:
            raise ValueError(
                f"Feature {name!r}: text features must be one str per example, got shape {s.shape}."
            )
    n = len(next(iter(arrays.values())))
    paths = shard_paths(prefix, num_shards)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    writers = [tf.io.TFRecordWriter(str(p), options) for p in paths]
    try:
        for i in range(n):  # round-robin: example i goes to shard i % num_shards
            writers[i % num_shards].write(_example(arrays, spec, i))
    finally:
        for w in writers:
            w.close()
    record = {
        "num_examples": n,
        "num_shards": num_shards,
        "compression": compression,
        "features": {k: {"dtype": s.dtype.name, "shape": s.shape.as_list()} for k, s in spec.items()},
    }
    Path(f"{prefix}{SPEC_SUFFIX}").write_text(json.dumps(record, indent=2) + "\n")
    return paths


def read_spec(prefix: str | Path) -> dict:
    """The spec file written beside the shards: counts, compression and per-feature TensorSpecs."""
    path = Path(f"{prefix}{SPEC_SUFFIX}")
    if not path.is_file():
        raise DataFileError(f"TFRecord spec file {path} is missing. {_HOW}")
    try:
        record = json.loads(path.read_text())
        record["features"] = {
            k: tf.TensorSpec(f["shape"], tf.as_dtype(f["dtype"])) for k, f in record["features"].items()
        }
    except (ValueError, KeyError, TypeError) as e:
        raise DataFileError(f"TFRecord spec file {path} is corrupt ({type(e).__name__}: {e}). {_HOW}") from e
    return record


def read_tfrecords(
    prefix: str | Path,
    *,
    num_workers: int = 1,
    worker_index: int = 0,
    supervised_keys: tuple[str, str] | None = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Read shards written by ``write_tfrecords`` as an unbatched dataset.

    Shards are read interleaved, one record from each in turn, in parallel; with
    ``deterministic=True`` and one worker this reproduces the written order.

    Sharding across workers: with ``num_workers > 1`` this worker reads shards
    ``worker_index, worker_index + num_workers, ...`` (explicit sharding, for your own
    multi-worker input functions), and tf.distribute's auto-sharding is switched off.
    With ``num_workers=1`` the dataset carries ``AutoShardPolicy.FILE``, so a
    ``MultiWorkerMirroredStrategy`` that distributes it gives each worker whole files.
    ``bigkeras.training.train`` keeps either policy: each worker trains on its own files.

    Args:
        prefix: the prefix the shards were written with.
        num_workers: the number of workers sharing the shards (at most the shard count).
        worker_index: this worker's index in ``[0, num_workers)``.
        supervised_keys: ``(features_key, label_key)`` to yield tuples instead of dicts.
        deterministic: keep the order fixed (``False`` trades order for throughput).

    Returns:
        A dataset of feature dicts, or of ``(features, label)`` with ``supervised_keys``.
    """
    record = read_spec(prefix)
    spec, count = record["features"], record["num_shards"]
    paths = shard_paths(prefix, count)
    for p in paths:
        if not p.is_file():
            raise DataFileError(f"TFRecord shard {p} is missing ({count} shards expected). {_HOW}")
    checks.positive_int("num_workers", num_workers)
    if num_workers > count:
        raise ValueError(f"`num_workers` must be at most the number of shards ({count}), got {num_workers}.")
    if (
        isinstance(worker_index, bool)
        or not isinstance(worker_index, int)
        or not 0 <= worker_index < num_workers
    ):
        raise ValueError(f"`worker_index` must be an integer in [0, {num_workers}), got {worker_index!r}.")
    if supervised_keys is not None:
        for key in supervised_keys:
            checks.one_of("supervised_keys", key, spec)

    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if num_workers > 1:
        files = files.shard(num_workers, worker_index)
    ds = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=record["compression"] or ""),
        cycle_length=len(range(worker_index, count, num_workers)),  # every shard of this worker open at once
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    parse_spec = {k: _parse_feature(s) for k, s in spec.items()}

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, parse_spec)
        example = {k: _decode(parsed[k], s) for k, s in spec.items()}
        return (example[supervised_keys[0]], example[supervised_keys[1]]) if supervised_keys else example

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if num_workers > 1 else policy.FILE
    return ds.with_options(options)


def _as_arrays(features) -> dict[str, np.ndarray]:
    if isinstance(features, tf.data.Dataset):
        rows = list(features.as_numpy_iterator())
        if not rows or not isinstance(rows[0], dict):
            raise ValueError("`features` must be a non-empty tf.data.Dataset of dicts of tensors.")
        features = {k: [row[k] for row in rows] for k in rows[0]}
    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"`features` must be a non-empty dict of arrays, got {type(features).__name__}.")
    arrays = {}
    for k, v in features.items():
        array = np.asarray(v)
        arrays[k] = array.astype(object) if array.dtype.kind in "US" else array
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"`features` must be non-empty arrays of one length, got lengths {lengths}.")
    return arrays


def _is_text(array: np.ndarray) -> bool:
    return array.dtype == object or array.dtype.kind in "US"


def _example(arrays: Mapping[str, np.ndarray], spec: Mapping[str, tf.TensorSpec], i: int) -> bytes:
    return encode_example({name: arrays[name][i] for name in spec}, spec)


def encode_example(example: Mapping, spec: Mapping[str, tf.TensorSpec]) -> bytes:
    """One example (``{name: value}``) as a serialized ``tf.train.Example``, encoded as ``spec`` says.

    ``write_tfrecords`` and the Beam pipelines (``bigkeras.data.beam``) both encode with this,
    so ``read_tfrecords`` reads what either wrote.
    """
    feature = {}
    for name, s in spec.items():
        value = example[name]
        if s.dtype == tf.string:
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        elif s.dtype == tf.uint8:
            feature[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[np.asarray(value).tobytes()])
            )
        elif s.dtype.is_integer or s.dtype.is_bool:
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=np.ravel(value).astype(np.int64).tolist())  # lists: 2x faster
            )
        elif s.dtype.is_floating:
            feature[name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=np.ravel(value).astype(np.float32).tolist())
            )
        else:
            raise ValueError(
                f"Feature {name!r}: dtype {s.dtype.name} cannot be stored in a tf.train.Example."
            )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _parse_feature(s: tf.TensorSpec) -> tf.io.FixedLenFeature:
    if s.dtype in (tf.string, tf.uint8):
        return tf.io.FixedLenFeature([], tf.string)
    if s.dtype.is_floating:
        return tf.io.FixedLenFeature(s.shape, tf.float32)
    return tf.io.FixedLenFeature(s.shape, tf.int64)


def _decode(value: tf.Tensor, s: tf.TensorSpec) -> tf.Tensor:
    if s.dtype == tf.uint8:
        return tf.reshape(tf.io.decode_raw(value, tf.uint8), s.shape)
    return value if value.dtype == s.dtype else tf.cast(value, s.dtype)
