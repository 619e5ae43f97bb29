"""Every private TensorFlow, Keras and keras-hub API bigkeras relies on, in one place.

Each is used because no public API does the job (the reason is next to each). A release that
renames one would otherwise break bigkeras far from here with an ``AttributeError``;
``missing()`` names each one an installed release lacks, what uses it and why, and
``tests/test_private_apis.py`` fails with that message.

One more private use lives outside this module on purpose: ``serving/verify_child.py`` runs
in a process that must not import bigkeras (nor Keras), and asks
``tensorflow.python.framework.op_def_registry.get`` whether the model server's op
registry has each op a SavedModel needs (TensorFlow has no public op-registry lookup).
``missing()`` checks that one too.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace


def build_compiled_state(model, data_spec) -> None:
    """Create a compiled model's metric, loss and optimizer state from its input spec alone.

    ``model._symbolic_build`` is what ``fit`` calls before its first step. bigkeras' own
    multi-worker loop (``training.loop``) must do the same before it traces its step, and
    Keras has no public equivalent: ``model.build`` makes the layers' weights only, and a
    real batch would go through ``fit``'s cross-worker input reduction.
    """
    model._symbolic_build(data_batch=data_spec)


def check_peer_health(peer: str, timeout_seconds: float) -> None:
    """Ask a collective peer (``/job:worker/replica:0/task:1``) to answer within the timeout.

    Raises the ``tf.errors`` exception the probe ends in (Unavailable, DeadlineExceeded...).
    TensorFlow's eager context does this for its own health checks, which it switches off
    whenever the coordination service runs; no public API exposes the probe.
    """
    from tensorflow.python.eager import context

    context.context().check_collective_ops_peer_health(peer, timeout_in_ms=int(timeout_seconds * 1000))


def abort_collectives(message: str) -> None:
    """Fail every collective op this process is in, or enters next, with ``UNAVAILABLE: message``.

    The only way to end an all-reduce that waits for a lost peer (no public API).
    """
    import tensorflow as tf
    from tensorflow.python.eager import context

    context.context().abort_collective_ops(tf.errors.UNAVAILABLE, message)


def keras_hub_block_parts(layer) -> SimpleNamespace:
    """The sublayers of a keras-hub ``TransformerEncoder`` or ``TransformerDecoder``.

    keras-hub keeps them as private attributes and has no public accessor (its own
    checkpoint converters read the same attributes); bigkeras reads keras-hub presets'
    weights through them.
    """
    return SimpleNamespace(
        self_attention=layer._self_attention_layer,
        self_attention_norm=layer._self_attention_layer_norm,
        ffn_intermediate=layer._feedforward_intermediate_dense,
        ffn_output=layer._feedforward_output_dense,
        ffn_norm=layer._feedforward_layer_norm,
    )


def sublayers(model) -> list:
    """Every layer inside ``model``, nested ones included (not ``model`` itself).

    Keras has no public recursive listing (``Model.layers`` is the top level only); its own
    ``Model.quantize`` walks this list to find the layers it quantizes, and bigkeras finds
    those layers' int8 kernels through it.
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def _keras_symbolic_build():
    import keras

    if "data_batch" not in inspect.signature(keras.Model._symbolic_build).parameters:
        raise TypeError("keras.Model._symbolic_build no longer takes data_batch=")


def _tensorflow_collectives():
    from tensorflow.python.eager import context

    for name in ("check_collective_ops_peer_health", "abort_collective_ops"):
        getattr(context.Context, name)


def _keras_hub_blocks():
    import keras_hub

    encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=8, num_heads=1)
    decoder = keras_hub.layers.TransformerDecoder(intermediate_dim=8, num_heads=1)
    encoder.build((None, 2, 4))
    decoder.build((None, 2, 4))
    for layer in (encoder, decoder):
        keras_hub_block_parts(layer)


def _keras_sublayers():
    import keras

    inner = keras.layers.Dense(1)
    model = keras.Sequential([keras.Input((2,)), inner])
    if not any(layer is inner for layer in sublayers(model)):
        raise LookupError("Layer._flatten_layers(include_self=False, recursive=True) misses a nested layer")


def _tensorflow_op_registry():
    from tensorflow.python.framework import op_def_registry

    if op_def_registry.get("MatMul") is None:
        raise LookupError("op_def_registry.get('MatMul') returned None")


# (the private API, where bigkeras uses it, a probe that raises if the installed release lacks it)
PRIVATE_APIS = (
    ("keras.Model._symbolic_build(data_batch=...)", "training.loop (multi-worker loop)", _keras_symbolic_build),
    ("tensorflow.python.eager.context.Context.check_collective_ops_peer_health / abort_collective_ops",
     "training.faults.PeerWatch (lost-worker detection)", _tensorflow_collectives),
    ("keras_hub TransformerEncoder/Decoder _self_attention_layer, _feedforward_* ...",
     "checkpoints.keras_hub_presets (BERT and GPT-2 presets)", _keras_hub_blocks),
    ("keras.Layer._flatten_layers(include_self=False, recursive=True)",
     "generation (int8 kernels cast once per decode)", _keras_sublayers),
    ("tensorflow.python.framework.op_def_registry.get", "serving.verify_child (TF Serving op check)",
     _tensorflow_op_registry),
)


def missing() -> list[str]:
    """One line per private API the installed TensorFlow, Keras or keras-hub no longer has."""
    problems = []
    for api, used_by, probe in PRIVATE_APIS:
        try:
            probe()
        except Exception as err:  # noqa: BLE001  (any failure means the API changed)
            problems.append(f"{api} (used by bigkeras.{used_by}) is gone or changed: {type(err).__name__}: {err}")
    return problems
