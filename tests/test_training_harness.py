"""train() in one process: artifacts, bad input, NaN safety, accumulation, schedules,
weight-decay exclusions and mixed precision."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bigkeras.training import TrainConfig, train
from bigkeras.training.optim import WarmupSchedule, make_optimizer
from tests.helpers import ROOT

SMALL = dict(strategy="default", tensorboard=False, verbose=0)


def data(n=64, seed=0, nan_from=None, nan_labels=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8)).astype("float32")
    y = x[:, 0, :3].argmax(-1).astype("float32" if nan_labels else "int32")
    if nan_from is not None:
        x[nan_from:] = np.nan
    if nan_labels:
        y[5] = np.nan
    return tf.data.Dataset.from_tensor_slices((x, y))


def test_run_dir_holds_config_history_curves_and_checkpoints(tmp_path):
    config = TrainConfig(epochs=2, batch_size=16, run_dir=str(tmp_path), tensorboard=True,
                         strategy="default", verbose=0)
    result = train("mlp_tiny", data(), data(32, seed=1), config, model_kwargs={"hidden_units": [8]})
    record = json.loads((tmp_path / "config.json").read_text())
    assert record == {"model": "mlp_tiny", "kwargs": {"hidden_units": [8]},
                      "train": json.loads(json.dumps(config.to_dict()))}
    assert result.model.get_layer("mlp_dense0").units == 8
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(result.history["loss"]) == 2 and result.history["loss"][1] < result.history["loss"][0]
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[0] == "epoch" and len(rows) == 3
    for name in ("curves.png", "best.keras", "last.keras", "backup/latest.weights.h5"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert any((tmp_path / "logs").rglob("events.out.tfevents*"))
    last = keras.saving.load_model(tmp_path / "last.keras")
    for a, b in zip(last.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "field, value",
    [("batch_size", -4), ("strategy", "tpu_pod"), ("optimizer", "lamb"), ("schedule", "linear"),
     ("mixed_precision", "fp8"), ("grad_accum_steps", 0), ("learning_rate", -1.0)],
)
def test_bad_config_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`.*{value!r}".replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_bad_arguments_to_train_raise(tmp_path):
    config = TrainConfig(run_dir=str(tmp_path), **SMALL)
    with pytest.raises(ValueError, match="`train_data`"):
        train("mlp_tiny", np.zeros((4, 8, 8)), config=config)
    with pytest.raises(ValueError, match="`config`"):
        train("mlp_tiny", data(), config={"epochs": 1})
    with pytest.raises(ValueError, match="Unknown model 'no_such_model'"):
        train("no_such_model", data(), config=config)


def test_nan_features_stop_cleanly_and_keep_the_last_finite_checkpoint(tmp_path):
    # Epoch 1 reads the clean first half, epoch 2 the NaN second half. A tanh MLP: TF's
    # graph optimiser fuses MatMul + ReLU into oneDNN kernels that map NaN to 0 on some CPUs.
    config = TrainConfig(epochs=4, batch_size=16, steps_per_epoch=2, run_dir=str(tmp_path), **SMALL)
    with pytest.warns(UserWarning, match="non-finite loss"):
        result = train("mlp_tiny", data(64, nan_from=32), config=config, model_kwargs={"activation": "tanh"})
    assert len(result.history["loss"]) == 2  # stopped in epoch 2 of 4
    assert np.isfinite(result.history["loss"][0]) and np.isnan(result.history["loss"][1])
    for name in ("last.keras", "best.keras"):
        weights = keras.saving.load_model(tmp_path / name).get_weights()
        assert all(np.isfinite(w).all() for w in weights), name
    state = json.loads((tmp_path / "backup" / "training_state.json").read_text())
    assert state["epoch"] == 1  # the NaN epoch was not backed up


def test_nan_labels_raise_a_clear_error_before_any_checkpoint(tmp_path):
    config = TrainConfig(epochs=2, batch_size=16, run_dir=str(tmp_path), **SMALL)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels contain NaN or Inf"):
        train("mlp_tiny", data(nan_labels=True), config=config)
    assert not (tmp_path / "last.keras").exists()


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    def run(batch_size, accum, name):
        config = TrainConfig(epochs=1, batch_size=batch_size, grad_accum_steps=accum, optimizer="sgd",
                             momentum=0.9, weight_decay=0.0, learning_rate=0.1, run_dir=str(tmp_path / name),
                             **SMALL)
        return train("mlp_tiny", data(64), config=config).model

    accumulated, big = run(8, 4, "accum"), run(32, 1, "big")
    assert int(accumulated.optimizer.iterations) == int(big.optimizer.iterations) == 2
    changed = False
    for a, b, init in zip(accumulated.get_weights(), big.get_weights(), run_init()):
        np.testing.assert_allclose(a, b, atol=2e-6)
        changed |= not np.allclose(a, init)
    assert changed


def run_init():
    keras.utils.set_random_seed(0)
    from bigkeras import build

    return build("mlp_tiny").get_weights()


def test_schedules_warm_up_then_decay():
    cosine = WarmupSchedule(1.0, total_steps=110, warmup_steps=10, decay="cosine")
    lrs = [float(cosine(s)) for s in range(111)]
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 10, rtol=1e-6)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5, abs=1e-6)
    assert lrs[110] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(lrs[10:]) <= 1e-7)

    step = WarmupSchedule(1.0, total_steps=100, decay="step", boundaries=(0.5, 0.75), gamma=0.1)
    assert [float(step(s)) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    restored = WarmupSchedule.from_config(json.loads(json.dumps(cosine.get_config())))
    assert float(restored(37)) == pytest.approx(lrs[37])

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    opt = make_optimizer(TrainConfig(schedule="cosine", warmup_steps=5), model, total_steps=50)
    opt.build(model.trainable_variables)
    assert float(opt.learning_rate) == pytest.approx(1e-3 / 5)  # step 0 of 5 warmup steps
    constant = make_optimizer(TrainConfig(), model, total_steps=50)
    assert float(constant.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adafactor"])
def test_weight_decay_skips_biases_and_norm_parameters(name):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    for v in model.trainable_variables:
        v.assign(np.ones(v.shape, "float32"))
    config = TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5, momentum=0.0)
    opt = make_optimizer(config, model, total_steps=1)
    # Zero gradients: only weight decay can move a variable.
    opt.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    moved = {v.path: float(np.abs(np.asarray(v) - 1).max()) for v in model.trainable_variables}
    assert moved.pop("dense/kernel") == pytest.approx(0.05)  # x -= lr * wd * x
    assert moved == {k: 0.0 for k in moved} and set(moved) == {
        "dense/bias", "ln/gamma", "ln/beta", "bn/gamma", "bn/beta"}


def test_adafactor_steps_scale_with_each_weights_rms():
    # T5's optimizer: the same gradient moves a weight of RMS 1 a hundred times further than one
    # of RMS 0.01 (a unit-variance embedding and a small kernel change at the same relative rate).
    big, small = keras.Variable(np.ones((4, 4), "float32")), keras.Variable(np.full((4, 4), 0.01, "float32"))
    opt = make_optimizer(TrainConfig(optimizer="adafactor", learning_rate=0.01), keras.Sequential(), total_steps=1)
    gradient = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    opt.apply([gradient, gradient], [big, small])
    moved_big, moved_small = np.abs(np.asarray(big) - 1), np.abs(np.asarray(small) - 0.01)
    assert moved_big.max() > 0 and np.allclose(moved_big, 100 * moved_small, rtol=1e-3)


def test_mixed_bfloat16_computes_in_bf16_with_float32_variables(tmp_path):
    config = TrainConfig(epochs=1, batch_size=16, mixed_precision="mixed_bfloat16", run_dir=str(tmp_path), **SMALL)
    result = train("mlp_tiny", data(), config=config)
    dense = result.model.get_layer("mlp_dense0")
    assert dense.compute_dtype == "bfloat16" and dense.kernel.dtype == "float32"
    assert result.model(np.zeros((1, 8, 8), "float32")).dtype == "float32"  # logits stay float32
    assert np.isfinite(result.history["loss"]).all()
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back


def test_precise_bn_replaces_lagging_moving_statistics_with_the_batches_mean(tmp_path):
    # Inputs of mean 5 and variance 4 straight into a BatchNormalization: after 4 steps at
    # momentum 0.99 the moving mean is still ~0.2; PreciseBN makes it the 4 batches' mean.
    x = np.random.default_rng(0).normal(5.0, 2.0, (64, 3)).astype("float32")
    y = np.zeros(64, "int32")

    def model():
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.BatchNormalization(name="bn")(inputs)))

    results = {}
    for batches in (0, 2):
        config = TrainConfig(batch_size=16, precise_bn_batches=batches, run_dir=str(tmp_path / str(batches)), **SMALL)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        results[batches] = train(model, dataset, dataset, config).model.get_layer("bn")
    assert np.all(results[0].moving_mean.numpy() < 0.5)
    first_two = x[:32].reshape(2, 16, 3)  # the unshuffled first two batches
    np.testing.assert_allclose(results[2].moving_mean.numpy(), first_two.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(results[2].moving_variance.numpy(), first_two.var(1).mean(0), rtol=1e-4)
    assert results[2].momentum == 0.99  # restored
    saved = keras.saving.load_model(tmp_path / "2" / "last.keras").get_layer("bn")
    np.testing.assert_array_equal(saved.moving_mean.numpy(), results[2].moving_mean.numpy())


def test_a_checkpoint_loads_in_a_fresh_process_after_import_bigkeras(tmp_path):
    # The compiled optimizer's cosine schedule is a bigkeras class; `import bigkeras` registers it.
    config = TrainConfig(batch_size=16, schedule="cosine", warmup_steps=2, run_dir=str(tmp_path), **SMALL)
    train("mlp_tiny", data(), data(32, seed=1), config)
    code = (f"import bigkeras, keras; m = keras.saving.load_model({str(tmp_path / 'best.keras')!r}); "
            "print(m.name)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("mlp")
