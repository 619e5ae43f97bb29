"""Each epoch reads a shuffled dataset in the order an uninterrupted Keras ``fit`` reads it: in
the multi-worker loop (``fit_distributed``) and after a resume, dropout masks included."""

import keras
import numpy as np
import tensorflow as tf

from bigkeras import data
from bigkeras.training import TrainConfig, train
from bigkeras.training.loop import fit_distributed
from bigkeras.training.train import local_copy


def shuffled(n=96, seed=0):
    """Made as a fresh process makes it: the shuffle's seeds follow TensorFlow's global seed too."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8)).astype("float32")
    return data.from_arrays(x, x[:, 0, :3].argmax(-1).astype("int32"), shuffle=True)


def config(run_dir, epochs, resume=False):
    return TrainConfig(epochs=epochs, batch_size=16, strategy="one_device", run_dir=str(run_dir), resume=resume,
                       tensorboard=False, verbose=0, optimizer="sgd", learning_rate=0.1, seed=0)


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_the_multi_worker_loop_reads_the_epochs_in_fits_order():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")  # a strategy: fit takes its build batch
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(3)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        models.append(model)
    models[0].fit(shuffled().batch(16), epochs=3, verbose=0, shuffle=False)
    fit_distributed(models[1], shuffled().batch(16), epochs=3, steps_per_epoch=6, verbose=0)
    assert max_diff(*models) < 1e-6


def test_a_resumed_run_of_shuffled_data_through_dropout_ends_with_the_uninterrupted_weights(tmp_path):
    kwargs = {"model_kwargs": {"dropout": 0.3}}
    whole = train("mlp_tiny", shuffled(), config=config(tmp_path / "whole", 3), **kwargs)
    train("mlp_tiny", shuffled(), config=config(tmp_path / "cut", 1), **kwargs)  # "killed" after epoch 1
    resumed = train("mlp_tiny", shuffled(), config=config(tmp_path / "cut", 3, resume=True), **kwargs)
    assert len(resumed.history["loss"]) == 3
    assert max_diff(whole.model, resumed.model) == 0


def test_local_copy_has_the_weights_and_the_compiled_metrics():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    copy = local_copy(model)
    assert copy is not model and max_diff(model, copy) == 0
    scores = copy.evaluate(np.ones((4, 4), "float32"), np.zeros(4, "int32"), return_dict=True, verbose=0)
    assert set(scores) == {"loss", "accuracy"}
