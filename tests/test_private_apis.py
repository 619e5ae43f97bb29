"""The private TensorFlow, Keras and keras-hub APIs bigkeras relies on still exist, in one place.

An upgrade that removes or changes one fails here, naming the API, what uses it and why,
instead of an ``AttributeError`` deep inside a multi-worker run or a checkpoint load.
``tests/test_architecture.py`` checks that no other module reaches into private names.
"""

import keras
import numpy as np
import tensorflow as tf

from bigkeras import private_apis


def test_the_installed_releases_have_every_private_api_bigkeras_uses():
    problems = private_apis.missing()
    assert not problems, "Upgrade broke private APIs bigkeras relies on:\n" + "\n".join(problems)


def test_missing_names_an_api_that_changed(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", lambda self, iterator=None: None)  # a new signature
    (problem,) = private_apis.missing()
    assert problem.startswith("keras.Model._symbolic_build") and "training.loop" in problem


def test_build_compiled_state_creates_metric_and_optimizer_state_from_a_spec():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    spec = (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int32))
    private_apis.build_compiled_state(model, spec)
    assert model.compiled and model.optimizer.built and model.metrics[-1].built
    model.train_on_batch(np.ones((2, 3), "float32"), np.array([0, 1]))
