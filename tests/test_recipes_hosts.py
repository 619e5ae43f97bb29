"""Recipes on two "hosts" (network namespaces joined by a veth pair), started with
``--workers HOST:PORT,HOST:PORT --worker-index I``, against one process at the same global batch.

The reference is one process with two replicas (``--cpu-replicas 2 --strategy mirrored``, 16
examples each): the workers split each global batch of 32 the same way, and batch-norm
statistics and dropout masks are per replica, so only then is the same run expected. Every
process runs single-threaded kernels (``TF_NUM_INTRAOP_THREADS=1``): a convolution's sums
otherwise follow the thread count. Float32 throughout (``--mixed-precision off``): bfloat16
rounding turns the all-reduce's summation order into visible differences in a smoke run.
Tolerances, from float summation order: held-out accuracy within one example, losses within
1e-3 relative, the exports' outputs (logits, probabilities) within 1e-3 of their scale (at least 1) (measured: see the
report printed with -s).
"""

import csv
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bigkeras.training.faults import DETECTION_BOUND_SECONDS
from tests.cluster import PYTHON, ROOT, Cluster
from tests.helpers import SMOKE_EXPORT_FLAGS
from tests.test_training_hosts import hosts  # noqa: F401  (the namespaces fixture)

pytestmark = [pytest.mark.slow, pytest.mark.processes]

BIGKERAS = [PYTHON, "-m", "bigkeras.cli"]  # what the `bigkeras` console script runs
KILLER = [PYTHON, str(ROOT / "tests" / "recipe_worker.py")]
ENV = {"PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
# --resume: a rerun of the same line continues; a warmup of 1 to 8 rows keeps each export and its verify short.
FLAGS = ["--smoke", "--mixed-precision", "off", "--resume", *SMOKE_EXPORT_FLAGS]
PORT = 23470  # the namespaces are new: any port is free in them
# From a worker's death to its peer's exit: the health check's detection bound, then unwinding the step.
EXIT_BOUND = DETECTION_BOUND_SECONDS + 15


def recipe(name):
    return str(ROOT / "recipes" / f"{name}.py")


def outputs(base: Path) -> list[str]:
    return ["--run-dir", str(base / "run"), "--export-dir", str(base / "export")]


def results(base: Path) -> dict:
    return json.loads((base / "run" / "results.json").read_text())


def history(base: Path) -> list[dict]:
    with open(base / "run" / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def export_outputs(base: Path, name: str) -> dict[str, np.ndarray]:
    """The float outputs of the export's ``serving_default`` on fixed requests (images or text)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the ops of text exports: WordPiece, NormalizeUTF8...)

    (version,) = (base / "export" / name).iterdir()
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    rng = np.random.default_rng(0)
    inputs = {}
    for key, spec in signature.structured_input_signature[1].items():
        if spec.dtype == tf.string:
            inputs[key] = tf.constant(["a gripping, beautifully acted film", "dull and far too long", "fine"])
        else:
            inputs[key] = tf.constant(rng.random((3, *spec.shape[1:])), spec.dtype)
    return {k: v.numpy() for k, v in signature(**inputs).items() if v.dtype.is_floating}


def output_difference(a: dict, b: dict) -> float:
    """The largest difference between ``a``'s and ``b``'s outputs, relative to each one's scale (at least 1)."""
    assert a.keys() == b.keys() and a
    return max(float(np.max(np.abs(a[k] - b[k])) / max(1.0, np.max(np.abs(a[k])))) for k in a)


def start_workers(cluster, hosts, tag, commands, port, bases, cwds):  # noqa: F811
    addresses = ",".join(f"{a}:{port}" for a in hosts.addresses)
    return [cluster.start(f"{tag}{i}", hosts.wrap(i, [*commands[i], "--workers", addresses, "--worker-index", str(i),
                                                      *outputs(bases[i])]),
                          env=ENV, cwd=cwds[i])
            for i in range(2)]  # fmt: skip


def two_workers_match_one_process(tmp_path, hosts, cluster, name, flags, timeout):  # noqa: F811
    """Run ``name`` in one process and on two namespaced workers; check what the issue asks."""
    for i in range(2):  # only the link's subnet is routed: the hosts reach each other and nothing else
        routes = hosts.routes(i)
        assert "default" not in routes and routes.startswith("10.213.0.0/24"), routes
    cwds = [tmp_path / f"cwd{i}" for i in range(2)]
    for cwd in cwds:
        cwd.mkdir()
    start = time.monotonic()
    one = cluster.start("one", [PYTHON, recipe(name), *flags, "--strategy", "mirrored", "--cpu-replicas", "2",
                                "--batch-size", "16", *outputs(tmp_path / "one")], env=ENV)  # fmt: skip
    # The non-chief gets run and export directories of its own: they must stay unwritten.
    workers = start_workers(cluster, hosts, "worker", [[*BIGKERAS, "train", name, *flags, "--batch-size", "16"]] * 2,
                            PORT, [tmp_path / "two", tmp_path / "other"], cwds)  # fmt: skip
    logs = [cluster.finish(p, timeout=timeout) for p in workers]
    cluster.finish(one, timeout=timeout)
    print(f"{name}: one process and two workers in {time.monotonic() - start:.0f} s")

    assert f"worker 0 of 2 workers ({hosts.addresses[0]}:{PORT}), the chief" in logs[0]
    assert f"worker 1 of 2 workers ({hosts.addresses[1]}:{PORT}), not the chief" in logs[1]
    for log in logs:
        assert "every worker answered" in log and "8/8 - " in log  # the progress line: 256 examples / 32
    assert "verified without Keras" in logs[0] and "not the chief worker" in logs[1]
    # The non-chief wrote nothing outside its temporary folder (TMPDIR is tmp-worker1).
    assert not (tmp_path / "other").exists() and list(cwds[1].iterdir()) == []

    ref, got = results(tmp_path / "one"), results(tmp_path / "two")
    n_test = 128  # recipe.SMOKE_SIZES["test"]
    print(f"{name}: {ref['metric']} one process {ref['value']}, two workers {got['value']}")
    assert got["metric"] == ref["metric"] and abs(got["value"] - ref["value"]) <= 1 / n_test + 1e-4
    for a, b in zip(history(tmp_path / "one"), history(tmp_path / "two"), strict=True):
        for key in ("loss", "val_loss"):
            assert abs(a[key] - b[key]) <= 1e-3 * abs(a[key]), (key, a, b)
    diff = output_difference(export_outputs(tmp_path / "one", name), export_outputs(tmp_path / "two", name))
    print(f"{name}: the exports' serving_default outputs differ by {diff:.3g} of their scale")
    assert diff <= 1e-3
    return cwds


def test_fashion_mnist_cnn_on_two_hosts_and_a_lost_worker(tmp_path, hosts):  # noqa: F811
    name, flags = "fashion_mnist_cnn", [*FLAGS, "--epochs", "3"]
    with Cluster(tmp_path) as cluster:
        cwds = two_workers_match_one_process(tmp_path, hosts, cluster, name, flags, timeout=400)

        # SIGKILL worker 1 at step 3 of epoch 2: worker 0 stops with the lost-worker error.
        shared = [tmp_path / "killed"] * 2  # a run directory both hosts read, as on NFS
        plain = [PYTHON, recipe(name), *flags, "--batch-size", "16"]
        first = start_workers(cluster, hosts, "killed", [plain, [*KILLER, "2:3", *plain[1:]]], PORT + 1, shared, cwds)
        cluster.finish(first[1], timeout=240, expect_ok=False)
        killed = time.monotonic()  # within the poll interval of the SIGKILL
        log = cluster.finish(first[0], timeout=EXIT_BOUND + 30, expect_ok=False)
        detected = time.monotonic() - killed
        print(f"{name}: worker 0 exited {detected:.1f} s after worker 1 was killed")
        assert first[1].returncode == -signal.SIGKILL and "SIGKILL at epoch 2, step 3" in cluster.log(first[1])
        assert first[0].returncode != 0 and "WorkerLostError: A peer worker was lost" in log, log[-3000:]
        assert detected < EXIT_BOUND, log[-3000:]
        assert not (tmp_path / "killed" / "export").exists()
        assert not any(p.name.startswith("tmp-") for p in (tmp_path / "killed" / "run").iterdir())

        # Rerun the same two commands: they resume at epoch 2 and export what the uninterrupted run did.
        again = start_workers(cluster, hosts, "again", [plain, plain], PORT + 2, shared, cwds)
        logs = [cluster.finish(p, timeout=400) for p in again]
    for log in logs:
        assert "Epoch 2/3" in log and "Epoch 1/3" not in log, log[-2000:]
    diff = output_difference(export_outputs(tmp_path / "two", name), export_outputs(tmp_path / "killed", name))
    print(f"{name}: resumed after the lost worker vs uninterrupted: exports' outputs differ by {diff:.3g}")
    assert diff <= 1e-6
    assert results(tmp_path / "killed")["value"] == results(tmp_path / "two")["value"]
    assert list(cwds[1].iterdir()) == []


def test_reviews_minilm_with_lora_on_two_hosts(tmp_path, hosts, minilm_first_layer):  # noqa: F811
    """LoRA adapters (rank 2) on two hosts: the chief alone saves them beside its run.

    The checkpoint is the first of all-MiniLM-L6-v2's 6 layers (published weights, its own
    tokenizer and pooling files): the same loading, LoRA, export and verify paths as the full
    checkpoint, at a fraction of the compute for each of the three runs.
    """
    flags = [*FLAGS, "--lora-rank", "2", "--checkpoint", str(minilm_first_layer)]
    with Cluster(tmp_path) as cluster:
        two_workers_match_one_process(tmp_path, hosts, cluster, "reviews_minilm", flags, timeout=600)
    assert (tmp_path / "two" / "run" / "adapters.safetensors").is_file()
