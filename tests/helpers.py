"""Shared checks for model builders (timm's pattern): every test of a builder goes through here.

``check_model(model, vocab_size=...)`` builds example inputs from the model's own input specs,
calls the model eagerly, fits a few steps on one batch and sees the loss fall, saves and loads
the ``.keras`` file and compares outputs, and round-trips the JSON config.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from tests import warm

DEFAULT_LENGTH = 8  # for variable sequence axes
DEFAULT_SIDE = 32  # for variable image axes


def example_inputs(model: keras.Model, *, vocab_size: int = 2, batch: int = 2, seed: int = 0):
    """Random inputs matching ``model.inputs``: a dict keyed by input name, or one array.

    Integer inputs are token ids in ``[0, vocab_size)``, except inputs whose name ends in
    ``mask`` (all ones) and ``segment_ids`` (zeros and ones).
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in model.inputs:
        name = spec.name
        dims = spec.shape[1:]
        variable = DEFAULT_LENGTH if len(dims) <= 2 else DEFAULT_SIDE
        shape = (batch, *(variable if d is None else d for d in dims))
        dtype = keras.backend.standardize_dtype(spec.dtype)
        if name.endswith("mask"):
            arrays[name] = np.ones(shape, dtype=dtype)
        elif name.endswith("segment_ids"):
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif "int" in dtype:
            arrays[name] = rng.integers(0, vocab_size, size=shape).astype(dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(dtype)
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return arrays


def perturbed_weights(model: keras.Model, *, seed: int = 0, scale: float = 0.05) -> list[np.ndarray]:
    """``model``'s weights, each moved by seeded normal noise of ``scale``; variances kept positive.

    Two models given these weights must agree everywhere, not just where initial values
    happen to coincide. The noise is drawn in float32 (six times faster than numpy's float64
    normals: VGG16 with its top has 138M weights).
    """
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        value = rng.standard_normal(w.shape, dtype=np.float32)
        value *= scale
        value += w.numpy()
        values.append(np.abs(value) + 0.5 if "variance" in w.path else value)
    return values


def example_targets(outputs, *, seed: int = 1):
    """Integer class targets for logits outputs: shape ``logits.shape[:-1]``, in range."""
    rng = np.random.default_rng(seed)

    def one(logits):
        logits = np.asarray(logits)
        return rng.integers(0, logits.shape[-1], size=logits.shape[:-1])

    if isinstance(outputs, dict):
        return {k: one(v) for k, v in outputs.items()}
    return one(outputs)


def assert_close(a, b, *, atol=1e-5, rtol=1e-5):
    """``np.testing.assert_allclose`` over arrays, or over dicts of arrays with the same keys."""
    if isinstance(a, dict):
        assert set(a) == set(b), (sorted(a), sorted(b))
        for k in a:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=atol, rtol=rtol, err_msg=k)
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=rtol)


def check_model(model: keras.Model, *, vocab_size: int = 2, steps: int = 5, expected_output_shape=None):
    """Run the shared builder checks on ``model``; return its outputs on the example inputs."""
    x = example_inputs(model, vocab_size=vocab_size)
    batch = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)

    # 1. Eager call: outputs are finite logits with the batch first.
    outputs = model(x, training=False)
    flat = outputs.values() if isinstance(outputs, dict) else [outputs]
    for out in flat:
        out = np.asarray(out)
        assert out.shape[0] == batch, out.shape
        assert np.isfinite(out).all()
    if expected_output_shape is not None:
        assert tuple(np.asarray(outputs).shape) == (batch, *expected_output_shape)

    # 2. Fit a few steps on one batch: the training loss falls.
    y = example_targets(outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={k: loss for k in outputs} if isinstance(outputs, dict) else loss,
    )
    # train_on_batch returns the total loss first when it returns a list.
    losses = [float(np.atleast_1d(model.train_on_batch(x, y))[0]) for _ in range(steps)]
    assert np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"

    # 3. Save and load the .keras file without custom_objects: same outputs.
    expected = model(x, training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert_close(_numpy(loaded(x, training=False)), _numpy(expected), atol=1e-4, rtol=1e-4)

    # 4. The JSON config rebuilds the same architecture.
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert rebuilt.count_params() == model.count_params()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    return expected


def _numpy(outputs):
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return np.asarray(outputs)


ROOT = Path(__file__).resolve().parent.parent


# Smoke exports take at most 8 rows per request, so their warmup (a request per bucket: 1, 2, 4,
# 8 rows) and its replay by verify stay small; the default bounds (up to 256 rows) are tested on
# small exports in test_serving_session.py.
SMOKE_EXPORT_FLAGS = ("--max-batch-size", "8")
TWO_WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def prepare_on_beam(config):
    """``beam.prepare(config, TWO_WORKERS)`` with the worker processes forked warm.

    Beam's DirectRunner starts each worker as ``sys.executable -m apache_beam.runners.worker.sdk_worker_main``
    (``fn_runner.py``), so ``sys.executable`` is ``tests/warm.py``'s launcher while the pipeline runs:
    the workers are real processes that skip TensorFlow's import.
    """
    import sys

    from bigkeras.data import beam

    warm.wait_ready(120)  # else the launcher runs the real interpreter
    executable, sys.executable = sys.executable, warm.python()
    try:
        return beam.prepare(config, TWO_WORKERS)
    finally:
        sys.executable = executable


def write_tsv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def prepare_reviews_on_beam(tmp: Path, checkpoint: str = "all-MiniLM-L6-v2"):
    """The splits reviews_minilm trains on, written as TSV and prepared on Beam (2 processes) with
    ``checkpoint``'s tokenizer (the name its ``--checkpoint`` flag will give).

    Returns:
        ``(the recipe's reviews Data, the Beam manifest, the prepared folder)``.
    """
    import functools

    from bigkeras import checkpoints, recipe
    from bigkeras.data import beam

    args = recipe.parse_args("Doc.", name="r", data="rotten_tomatoes", epochs=1, batch_size=8, argv=[])
    reviews = recipe.load_data(args)
    for key in ("train", "validation", "test"):
        rows = [[reviews.class_names[y], x] for x, y in zip(reviews[key].x, reviews[key].y)]
        write_tsv(tmp / f"{key}.tsv", ["label", "text"], rows)
    config = beam.PrepareConfig(
        output=str(tmp / "prepared"), splits={k: [str(tmp / f"{k}.tsv")] for k in ("train", "validation", "test")},
        format="tsv", task="bert", num_shards=4, classes=reviews.class_names, sequence_length=64,
        tokenizer=functools.partial(checkpoints.load_tokenizer, checkpoint), tokenizer_name=checkpoint)
    return reviews, prepare_on_beam(config), tmp / "prepared"


def prepare_bible_on_beam(tmp: Path):
    """The Bible splits as one verse per line, one file per split, prepared on Beam (2 processes)
    for bible_gpt: a BPE of 512 tokens learned on the training verses, 128-token windows.

    Returns:
        ``(the Bible Data, the Beam manifest, the prepared folder)``.
    """
    from bigkeras import data
    from bigkeras.data import beam

    bible = data.load("bible")
    for key in ("train", "validation", "test"):
        (tmp / f"{key}.txt").write_text("\n".join(bible[key].x) + "\n", encoding="utf-8")
    config = beam.PrepareConfig(
        output=str(tmp / "prepared"), splits={k: [str(tmp / f"{k}.txt")] for k in ("train", "validation", "test")},
        task="gpt", vocabulary="bpe", vocabulary_size=512, sample_size=50_000, sequence_length=128, num_shards=4)
    return bible, prepare_on_beam(config), tmp / "prepared"


def first_layers_of(checkpoint: Path, target: Path, num_layers: int) -> Path:
    """A copy of the Hugging Face BERT directory ``checkpoint`` keeping only its first ``num_layers``
    encoder layers (the published weights of those, its embeddings, pooler and tokenizer files):
    a real checkpoint at a fraction of the compute, for the tests that run a recipe several times."""
    import re
    import shutil

    from bigkeras.checkpoints.common import read_header, read_tensors
    from bigkeras.checkpoints.huggingface import CONFIG, WEIGHTS, read_config, write_safetensors

    config = read_config(checkpoint)
    if not 0 < num_layers <= config["num_hidden_layers"]:
        raise ValueError(f"num_layers must be in 1..{config['num_hidden_layers']}, got {num_layers}")
    shutil.copytree(checkpoint, target, ignore=shutil.ignore_patterns(WEIGHTS, CONFIG, "*.bin"))
    (target / CONFIG).write_text(json.dumps({**config, "num_hidden_layers": num_layers}, indent=2))
    layer = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")  # the checkpoint's own tensor names
    kept = {k: info for k, info in read_header(checkpoint / WEIGHTS).items()
            if not (m := layer.search(k)) or int(m.group(2)) < num_layers}
    write_safetensors(target / WEIGHTS, read_tensors(checkpoint / WEIGHTS, kept))
    return target


def run_recipes_smoke(tmp: Path, names, *, via_cli: str, extra_flags=None, timeout: int = 600):
    """Run each recipe with ``--smoke`` in a subprocess, two at a time, into ``tmp``.

    The subprocesses start through ``tests/warm.py``'s launcher: forked with TensorFlow imported.

    ``via_cli`` runs as ``bigkeras train NAME``, the others as ``python recipes/NAME.py``.

    Returns:
        ``({name: (CompletedProcess, run_dir)}, export_dir)``.
    """
    export_dir = tmp / "saved_models"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}

    def run(name):
        run_dir = tmp / "runs" / name
        flags = ["--smoke", "--run-dir", str(run_dir), "--export-dir", str(export_dir), *SMOKE_EXPORT_FLAGS,
                 *(extra_flags or {}).get(name, [])]
        script = ["-m", "bigkeras.cli", "train", name] if name == via_cli else [str(ROOT / "recipes" / f"{name}.py")]
        start = time.perf_counter()
        proc = subprocess.run([warm.python(), *script, *flags], cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=timeout)
        print(f"{name}: {time.perf_counter() - start:.0f} s")
        return name, (proc, run_dir)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, names)), export_dir


def passed_smoke_run(smoke_runs, name: str):
    """``(run_dir, results, export_dir)`` of one ``run_recipes_smoke`` run, asserting that it
    exited 0 and that its export verified."""
    runs, export_dir = smoke_runs
    proc, run_dir = runs[name]
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "verified without Keras" in proc.stdout  # printed only after verify() passed
    return run_dir, json.loads((run_dir / "results.json").read_text()), export_dir
