"""Every recipe end to end with ``--smoke``, and the shared plumbing in ``bigkeras.recipe``.

The recipes run as users run them, in subprocesses (two at a time: most of each run is
interpreter and TensorFlow start-up), into temporary run and export directories. Each must
train, evaluate, write ``results.json`` and ``samples.json``, export a SavedModel whose
signatures a TF Serving client would call, pass ``verify`` (the recipe raises if the export
does not reproduce the Keras model), and appear in ``models.config``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigkeras import recipe
from tests.helpers import ROOT, passed_smoke_run, run_recipes_smoke

IMAGE = {"serving_default": {"images"}, "serving_bytes": {"image_bytes"}}
TEXT = {"serving_default": {"text"}}
RECIPES = {  # name -> the signatures (and their inputs) its export must have
    "fashion_mnist_mlp": IMAGE,
    "fashion_mnist_cnn": IMAGE,
    "fashion_mnist_resnet20": IMAGE,
    "fashion_mnist_inception": IMAGE,
    "reviews_lstm": TEXT,
    "reviews_transformer": TEXT,
    "reviews_minilm": {**TEXT, "embed": {"text"}},
    "transfer_learning": IMAGE,
}
VIA_CLI = "fashion_mnist_mlp"  # runs as `bigkeras train NAME`, the others as `python recipes/NAME.py`
EXTRA_FLAGS = {  # recipe-specific flags exercised by the smoke run
    "fashion_mnist_resnet20": ["--augment"],
    "reviews_minilm": ["--lora-rank", "2"],  # int8 exports: tests/test_lora.py (a smoke model's near-tied logits flip)
}
RESULT_KEYS = {"recipe", "data", "metric", "value", "wall_seconds", "command", "export"}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, reviews_prepared, minilm_first_layer):
    """Run every recipe with --smoke; ``{name: (CompletedProcess, run_dir)}`` plus the export dir.

    reviews_minilm trains from the Beam-prepared shards of its splits (``--data tfrecords:``,
    issue 25's end-to-end check), so the suite fine-tunes MiniLM once, not twice, and on the
    checkpoint's first layer (``minilm_first_layer``: the full one loads in test_checkpoints.py).
    """
    minilm = ["--checkpoint", str(minilm_first_layer), "--data", f"tfrecords:{reviews_prepared[2]}"]
    flags = {**EXTRA_FLAGS, "reviews_minilm": [*EXTRA_FLAGS["reviews_minilm"], *minilm]}
    return run_recipes_smoke(tmp_path_factory.mktemp("recipes"), RECIPES, via_cli=VIA_CLI, extra_flags=flags)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_smoke_run_trains_records_exports_and_verifies(smoke_runs, name):
    from tensorflow.core.protobuf import saved_model_pb2

    from bigkeras.serving import read_model_config, read_warmup
    from bigkeras.serving.bounds import load_bounds

    run_dir, results, export_dir = passed_smoke_run(smoke_runs, name)
    assert set(results) - {"details"} == RESULT_KEYS
    assert results["recipe"] == name and results["metric"] == "test_accuracy"
    assert 0.0 <= results["value"] <= 1.0 and results["wall_seconds"] > 0
    assert f"{name}.py --smoke" in results["command"]
    assert (results["data"] == "prepared") == (name == "reviews_minilm")  # that one trained from Beam's shards
    for artifact in ("config.json", "history.csv", "curves.png", "last.keras"):
        assert (run_dir / artifact).is_file(), artifact

    samples = json.loads((run_dir / "samples.json").read_text())
    assert len(samples) == recipe.SAMPLES
    assert all({"example", "label", "predicted", "probability"} <= set(row) for row in samples)
    assert all(0.0 <= row["probability"] <= 1.0 for row in samples)

    export = Path(results["export"])
    assert export == export_dir / name / "1"
    saved = saved_model_pb2.SavedModel.FromString((export / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    for signature, inputs in RECIPES[name].items():
        assert set(signatures[signature].inputs) == inputs
        expected = {"embedding"} if signature == "embed" else {"logits", "probabilities", "class_id", "class_name"}
        assert expected <= set(signatures[signature].outputs)
    warmup = read_warmup(export)
    assert {log.predict_log.request.model_spec.signature_name for log in warmup} == set(RECIPES[name])
    assert len(warmup) == 4 * len(RECIPES[name])  # --max-batch-size 8: buckets of 1, 2, 4 and 8 rows
    assert {b["max_rows"] for b in load_bounds(export).values()} == {8}

    served = {c.name for c in read_model_config(export_dir / "models.config").model_config_list.config}
    assert name in served


@pytest.mark.slow
def test_results_table_lists_every_recipe_run(smoke_runs):
    runs, _ = smoke_runs
    runs_root = next(iter(runs.values()))[1].parent
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "results.py"), "--runs", str(runs_root)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(row.split("|")[1].strip().strip("`") for row in rows) == sorted(RECIPES)
    for name, (_, run_dir) in runs.items():
        results = json.loads((run_dir / "results.json").read_text())
        assert f"`{results['command']}`" in proc.stdout


# ----------------------------------------------------------------------------- plumbing


def test_parse_args_defaults_and_bad_values(capsys):
    args = recipe.parse_args("Doc.", name="demo", data="digits", epochs=3, batch_size=16, argv=[])
    assert (args.epochs, args.batch_size, args.data, args.run_dir) == (3, 16, "digits", os.path.join("runs", "demo"))
    assert args.mixed_precision is False and not args.smoke
    assert recipe.parse_args("Doc.", name="d", data="digits", epochs=1, batch_size=1,
                             argv=["--mixed-precision"]).mixed_precision == "auto"
    with pytest.raises(SystemExit):
        recipe.parse_args("Doc.", name="demo", data="digits", epochs=3, batch_size=16, argv=["--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err


def test_train_config_from_args_and_smoke_overrides():
    argv = ["--epochs", "7", "--batch-size", "256", "--learning-rate", "0.01", "--run-dir", "r"]
    args = recipe.parse_args("Doc.", name="demo", data="digits", epochs=3, batch_size=16, argv=argv)
    config = recipe.train_config(args, schedule="cosine")
    assert (config.epochs, config.batch_size, config.learning_rate, config.schedule) == (7, 256, 0.01, "cosine")
    assert config.run_dir == "r" and config.resume is False
    smoke = recipe.train_config(recipe.parse_args("Doc.", name="demo", data="digits", epochs=3, batch_size=256,
                                                  argv=argv + ["--smoke"]), warmup_steps=100)
    assert (smoke.epochs, smoke.batch_size, smoke.warmup_steps, smoke.tensorboard) == (7, recipe.SMOKE_BATCH, 0, False)
    smoke = recipe.train_config(recipe.parse_args("Doc.", name="demo", data="digits", epochs=3, batch_size=256,
                                                  argv=["--smoke"]))  # one epoch unless --epochs says otherwise
    assert smoke.epochs == 1


def test_load_data_carves_validation_and_smoke_slices():
    args = recipe.parse_args("Doc.", name="demo", data="digits", epochs=1, batch_size=8, argv=[])
    digits = recipe.load_data(args)
    assert len(digits.validation) == round(0.1 * 1438) and len(digits.train) == 1438 - len(digits.validation)
    smoke = recipe.load_data(recipe.parse_args("Doc.", name="demo", data="digits", epochs=1, batch_size=8,
                                               argv=["--smoke"]))
    assert {k: len(v) for k, v in smoke.splits.items()} == {
        "train": recipe.SMOKE_SIZES["train"], "validation": recipe.SMOKE_SIZES["validation"],
        "test": recipe.SMOKE_SIZES["test"]}


def test_select_classes_keeps_and_relabels():
    args = recipe.parse_args("Doc.", name="demo", data="digits", epochs=1, batch_size=8, argv=[])
    digits = recipe.load_data(args)
    high = recipe.select_classes(digits, [7, 8, 9])
    assert high.class_names == ("7", "8", "9") and high.name == "digits[7,8,9]"
    for key, split in high.splits.items():
        original = digits[key]
        assert len(split) == int(np.isin(original.y, [7, 8, 9]).sum())
        np.testing.assert_array_equal(split.y, original.y[np.isin(original.y, [7, 8, 9])] - 7)


def test_image_preprocessor_scales_resizes_and_converts_channels():
    images = np.full((2, 28, 28, 1), 255, np.uint8)
    out, labels = recipe.image_preprocessor(32, 32, 3)(images, np.array([1, 2]))
    assert tuple(out.shape) == (2, 32, 32, 3)
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels, [1, 2])


def test_load_backbone_cuts_the_logits_and_takes_a_new_head(tmp_path):
    import bigkeras

    path = tmp_path / "pretrained.keras"
    bigkeras.build("cnn_tiny", num_classes=4).save(path)
    backbone = recipe.load_backbone(path)
    assert backbone.output.shape[-1] == 8  # cnn_tiny's hidden dense layer, not its 4 logits
    model = recipe.classifier_on(backbone, 6)
    assert model.output.shape[-1] == 6 and model.get_layer("logits").units == 6
    images = np.random.default_rng(0).random((2, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(model.layers[1](images), backbone(images), atol=1e-6)  # same weights


def test_load_backbone_bad_paths_say_what_they_accept(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        recipe.load_backbone(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError, match="config.json"):
        recipe.load_backbone(tmp_path)
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="`--arch` must be one of .*MobileNetV2"):
        recipe.load_backbone(weights)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.keras file, an \.h5 weights file"):
        recipe.load_backbone(tmp_path / "model.onnx")



@pytest.mark.slow
def test_transfer_learning_fine_tunes_the_backbone_after_the_head(smoke_runs):
    import keras

    runs, _ = smoke_runs
    _, run_dir = runs["transfer_learning"]
    head = keras.saving.load_model(run_dir / "head" / "last.keras")
    tuned = keras.saving.load_model(run_dir / "last.keras")
    frozen, fine = (m.get_layer("backbone").get_weights() for m in (head, tuned))
    assert any(not np.allclose(a, b) for a, b in zip(frozen, fine)), "the backbone did not move in fine-tuning"
