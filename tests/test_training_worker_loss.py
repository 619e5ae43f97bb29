"""A lost worker, in parts: only the chief writes, and the peer watch aborts the collectives
naming the lost peer.

The whole story runs end to end in tests/test_recipes_hosts.py: worker 1 of a recipe on two
hosts is SIGKILLed mid-epoch, worker 0 stops with ``WorkerLostError`` within the detection
bound, and rerunning both commands resumes from the chief's backup and exports what the
uninterrupted run exported."""

import argparse
import types

from bigkeras import recipe
from bigkeras.training import TrainResult


def test_only_the_chief_exports_and_writes_results(tmp_path):
    args = argparse.Namespace(name="mlp", export_dir=str(tmp_path / "saved_models"), start=0.0, command="")
    result = TrainResult(model=None, history={}, run_dir=tmp_path / "run", is_chief=False)
    record = recipe.publish(args, result, types.SimpleNamespace(name="data"), metric="test_accuracy",
                            value=0.5, samples=[{"example": 1}], signatures={})
    assert "export" not in record and record["value"] == 0.5
    assert list(tmp_path.iterdir()) == []  # no run dir files, no export, no models.config


def test_peer_watch_aborts_the_collectives_after_the_retries_and_names_the_peer(monkeypatch):
    import tensorflow as tf
    from tensorflow.python.eager import context

    from bigkeras.training.faults import PeerWatch

    resolver = types.SimpleNamespace(
        task_type="worker", task_id=0, cluster_spec=lambda: tf.train.ClusterSpec({"worker": ["a:1", "b:2"]})
    )
    probes, aborts = [], []

    def probe(peer, timeout_in_ms):
        probes.append(peer)
        if len(probes) > 2:  # healthy twice, then gone
            raise tf.errors.UnavailableError(None, None, "connection refused")

    ctx = context.context()
    monkeypatch.setattr(ctx, "check_collective_ops_peer_health", probe)
    monkeypatch.setattr(ctx, "abort_collective_ops", lambda code, message: aborts.append((code, message)))
    watch = PeerWatch(types.SimpleNamespace(cluster_resolver=resolver), interval=0.01, timeout=0.01, retries=3)
    assert watch.peers == ["/job:worker/replica:0/task:1"]
    watch.start()._thread.join(timeout=10)
    assert len(probes) == 5 and watch.lost == "/job:worker/replica:0/task:1"
    assert aborts == [(tf.errors.UNAVAILABLE,
                       "bigkeras: peer /job:worker/replica:0/task:1 is lost (3 health checks failed)")]
