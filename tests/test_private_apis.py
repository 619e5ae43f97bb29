"""The private TensorFlow, Keras and keras-hub APIs bigkeras relies on still exist, in one place.

An upgrade that removes or changes one fails here, naming the API, what uses it and why,
instead of an ``AttributeError`` deep inside a multi-worker run or a checkpoint load.
"""

import ast
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bigkeras import private_apis

PACKAGE = Path(__file__).resolve().parents[1] / "bigkeras"
# Modules allowed to touch private attributes of other libraries: this one, and the verify
# child, which must not import bigkeras (private_apis checks its one private import).
ALLOWED = {"private_apis.py", "serving/verify_child.py"}


def test_the_installed_releases_have_every_private_api_bigkeras_uses():
    problems = private_apis.missing()
    assert not problems, "Upgrade broke private APIs bigkeras relies on:\n" + "\n".join(problems)


def test_missing_names_an_api_that_changed(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", lambda self, iterator=None: None)  # a new signature
    (problem,) = private_apis.missing()
    assert problem.startswith("keras.Model._symbolic_build") and "training.loop" in problem


def test_no_module_outside_private_apis_reaches_into_another_librarys_private_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    offenders.append(f"{relative}:{node.lineno} .{node.attr}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                offenders += [f"{relative}:{node.lineno} import {n}" for n in names
                              if n.startswith(("tensorflow.python", "keras.src"))]
    assert not offenders, "private APIs belong in bigkeras/private_apis.py:\n" + "\n".join(offenders)


def test_build_compiled_state_creates_metric_and_optimizer_state_from_a_spec():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    spec = (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int32))
    private_apis.build_compiled_state(model, spec)
    assert model.compiled and model.optimizer.built and model.metrics[-1].built
    model.train_on_batch(np.ones((2, 3), "float32"), np.array([0, 1]))
