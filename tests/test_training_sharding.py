"""train() keeps the auto-shard policy its data carries: with two workers over sharded
TFRecords each example is trained on exactly once per epoch, by one worker."""

import json
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from bigkeras.data.tfrecords import write_tfrecords
from bigkeras.training.train import with_shard_policy
from tests.cluster import PYTHON, ROOT, Cluster, free_ports, tf_config

Policy = tf.data.experimental.AutoShardPolicy
NUM_EXAMPLES, NUM_SHARDS = 256, 4


def _with_policy(data, policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return data.with_options(options)


@pytest.mark.parametrize("policy", [Policy.OFF, Policy.FILE, Policy.DATA, Policy.HINT], ids=lambda p: p.name)
def test_a_policy_the_data_carries_is_kept(policy):
    data = _with_policy(tf.data.Dataset.range(4), policy).batch(2)
    assert with_shard_policy(data).options().experimental_distribute.auto_shard_policy == policy


def test_unset_policy_becomes_data():
    data = tf.data.Dataset.range(4).batch(2)
    assert data.options().experimental_distribute.auto_shard_policy == Policy.AUTO
    assert with_shard_policy(data).options().experimental_distribute.auto_shard_policy == Policy.DATA


@pytest.mark.slow
def test_two_workers_train_on_disjoint_shares_that_cover_the_tfrecords_once(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((NUM_EXAMPLES, 8)).astype("float32")
    features = {"x": x, "id": np.arange(NUM_EXAMPLES, dtype="int64"), "label": x[:, :3].argmax(-1).astype("int32")}
    prefix = tmp_path / "data" / "train"
    write_tfrecords(features, prefix, num_shards=NUM_SHARDS)  # example i lands in shard i % 4

    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    with Cluster(tmp_path) as cluster:
        procs = [
            cluster.start(
                f"worker{i}",
                [PYTHON, str(ROOT / "tests" / "sharding_worker.py"), "--prefix", str(prefix),
                 "--out", str(tmp_path / "runs"), "--ids", str(tmp_path / f"ids{i}.json")],
                tf_config(hosts, i),
            )
            for i in range(2)
        ]
        for proc in procs:
            cluster.finish(proc)
    seen = [json.loads((tmp_path / f"ids{i}.json").read_text()) for i in range(2)]

    for mode in ("explicit", "file"):
        ids = [seen[0][mode], seen[1][mode]]
        for i, worker_ids in enumerate(ids):
            counts = Counter(worker_ids)
            repeated = {k: c for k, c in counts.items() if c > 1}
            assert not repeated, f"{mode}: worker {i} trained on these ids more than once: {repeated}"
            # Whole shards: a worker reads its own files, not a slice of every file.
            assert len({k % NUM_SHARDS for k in worker_ids}) == NUM_SHARDS // 2, (mode, i, sorted(worker_ids))
        assert not set(ids[0]) & set(ids[1]), f"{mode}: both workers trained on {sorted(set(ids[0]) & set(ids[1]))}"
        assert sorted(ids[0] + ids[1]) == list(range(NUM_EXAMPLES)), f"{mode}: the epoch missed examples"
    # read_tfrecords(num_workers=2, worker_index=i) gives worker i shards i and i + 2.
    assert {k % NUM_SHARDS for k in seen[0]["explicit"]} == {0, 2}
    assert {k % NUM_SHARDS for k in seen[1]["explicit"]} == {1, 3}
