"""Sharded TFRecords: exact round trips of images and unicode strings, per-worker sharding,
auto-shard options, and errors that name the missing file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from bigkeras import data


def _read_all(prefix, **kwargs):
    return list(data.read_tfrecords(prefix, **kwargs).as_numpy_iterator())


def test_images_round_trip_in_order(tmp_path):
    x, y = data.load("digits").train  # 1,438 images: shards of 360, 360, 359, 359
    prefix = tmp_path / "digits" / "train"
    paths = data.write_tfrecords({"image": x, "label": y}, prefix, num_shards=4)
    assert [p.name for p in paths] == [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    assert [sum(1 for _ in tf.data.TFRecordDataset(str(p))) for p in paths] == [360, 360, 359, 359]
    spec = json.loads((tmp_path / "digits" / "train.spec.json").read_text())
    assert spec["num_examples"] == 1_438 and spec["features"]["image"] == {
        "dtype": "uint8",
        "shape": [8, 8, 1],
    }

    ds = data.read_tfrecords(prefix, supervised_keys=("image", "label"))
    assert ds.element_spec == (tf.TensorSpec((8, 8, 1), tf.uint8), tf.TensorSpec((), tf.int32))
    images, labels = zip(*ds.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack(images), x)  # same values, same order
    np.testing.assert_array_equal(labels, y)


def test_unicode_strings_and_mixed_dtypes_round_trip_compressed(tmp_path):
    human, iso = data.load("dates", train_size=300, test_size=10).train  # "4. März 1998", ...
    scores = np.linspace(-1, 1, 300, dtype=np.float32).reshape(300, 1)
    features = {"human": human, "iso": list(iso), "score": scores, "flag": scores[:, 0] > 0}
    data.write_tfrecords(features, tmp_path / "dates", num_shards=3, compression="GZIP")
    assert data.read_spec(tmp_path / "dates")["compression"] == "GZIP"
    rows = _read_all(tmp_path / "dates")
    assert [r["human"].decode() for r in rows] == list(human) and any(not h.isascii() for h in human)
    assert [r["iso"].decode() for r in rows] == list(iso)
    np.testing.assert_array_equal(np.stack([r["score"] for r in rows]), scores)
    assert [bool(r["flag"]) for r in rows] == (scores[:, 0] > 0).tolist()


def test_workers_read_disjoint_shards_that_cover_everything(tmp_path):
    ids = np.arange(103)
    data.write_tfrecords({"id": ids}, tmp_path / "ids", num_shards=4)
    per_worker = [
        [int(r["id"]) for r in _read_all(tmp_path / "ids", num_workers=2, worker_index=i)] for i in range(2)
    ]
    assert sorted(per_worker[0] + per_worker[1]) == ids.tolist()
    assert {i % 4 for i in per_worker[0]} == {0, 2} and {i % 4 for i in per_worker[1]} == {
        1,
        3,
    }  # whole files

    policy = tf.data.experimental.AutoShardPolicy
    assert (
        data.read_tfrecords(tmp_path / "ids").options().experimental_distribute.auto_shard_policy
        == policy.FILE
    )
    explicit = data.read_tfrecords(tmp_path / "ids", num_workers=2, worker_index=1)
    assert explicit.options().experimental_distribute.auto_shard_policy == policy.OFF
    with pytest.raises(ValueError, match=r"`num_workers` must be at most the number of shards \(4\), got 5"):
        data.read_tfrecords(tmp_path / "ids", num_workers=5)
    with pytest.raises(ValueError, match=r"`worker_index` must be an integer in \[0, 2\), got 2"):
        data.read_tfrecords(tmp_path / "ids", num_workers=2, worker_index=2)


def test_writes_a_dataset_of_dicts(tmp_path):
    texts = data.load("rotten_tomatoes").test.x[:50]
    ds = tf.data.Dataset.from_tensor_slices({"text": list(texts), "length": [len(t) for t in texts]})
    data.write_tfrecords(ds, tmp_path / "rt", num_shards=2)
    rows = _read_all(tmp_path / "rt", supervised_keys=("text", "length"))
    assert [t.decode() for t, _ in rows] == list(texts) and [int(n) for _, n in rows] == [
        len(t) for t in texts
    ]


def test_missing_files_and_bad_arguments_are_named(tmp_path):
    with pytest.raises(data.DataFileError, match=f"{tmp_path}/nothing.spec.json is missing.*write_tfrecords"):
        data.read_tfrecords(tmp_path / "nothing")
    paths = data.write_tfrecords({"id": np.arange(8)}, tmp_path / "ids", num_shards=4)
    paths[2].unlink()
    with pytest.raises(data.DataFileError, match=f"shard {paths[2]} is missing \\(4 shards expected\\)"):
        data.read_tfrecords(tmp_path / "ids")
    (tmp_path / "ids.spec.json").write_text("{not json")
    with pytest.raises(data.DataFileError, match="ids.spec.json is corrupt"):
        data.read_tfrecords(tmp_path / "ids")
    with pytest.raises(ValueError, match=r"`features` must be non-empty arrays of one length, got lengths"):
        data.write_tfrecords({"a": [1, 2], "b": [1]}, tmp_path / "bad")
    with pytest.raises(ValueError, match="`compression` must be one of None, 'GZIP', 'ZLIB'; got 'zip'"):
        data.write_tfrecords({"a": [1]}, tmp_path / "bad", compression="zip")
    with pytest.raises(ValueError, match="`supervised_keys` must be one of 'id'; got 'label'"):
        data.write_tfrecords({"id": np.arange(4)}, tmp_path / "ok", num_shards=2)
        data.read_tfrecords(tmp_path / "ok", supervised_keys=("id", "label"))
