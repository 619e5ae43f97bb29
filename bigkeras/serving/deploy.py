"""The model that gets exported: LoRA adapters merged into their kernels, optionally int8.

A LoRA model computes ``x (W + s A B)`` with three matmuls per adapted projection; serving
needs only ``W' = W + s A B``. ``deployable`` rebuilds the model without adapters (from its
config), copies every weight with the adapted kernels merged, and can then quantize the copy
with Keras' own int8 quantization (Dense, EinsumDense and Embedding kernels to int8 with
per-channel scales). The trained model is left as it was.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import warnings

import keras

from bigkeras import checks
from bigkeras.models.base import transformer_backbones

QUANTIZE = (None, "int8", "int8_dynamic")
# ``verify`` bounds for an int8 or bfloat16 export: the server's graph rounds a little
# differently than Keras, and bf16 keeps 3 significant digits; dynamic int8 input quantization
# turns 1e-7 float differences into whole int8 steps.
LOW_PRECISION_TOLERANCE = {"atol": 0.02, "rtol": 0.02}


def deployable(model: keras.Model, *, quantize: str | None = None) -> keras.Model:
    """``model`` itself, or a copy with LoRA merged and/or quantized.

    Args:
        model: a trained ``keras.Model`` (LoRA or not).
        quantize: None (default), ``"int8"`` (int8 weights, float compute) or
            ``"int8_dynamic"`` (Keras' int8 layers: activations quantized on every call).

    Returns:
        ``model`` when it has no adapters and ``quantize`` is None; otherwise a new model
        with no LoRA variables, equal to ``model`` up to float rounding (and int8 error),
        compiled as ``model`` was.
    """
    checks.one_of("quantize", quantize, QUANTIZE)
    lora_layers = [layer for backbone in transformer_backbones(model) for layer in backbone.lora_layers]
    if not lora_layers and quantize is None:
        return model
    fresh = model.__class__.from_config(_without_lora(model.get_config()))
    merged = {}  # id(frozen kernel) -> W + (alpha / rank) A B, as Keras' own `layer.kernel` computes it
    for layer in lora_layers:
        kernel = next(w for w in layer.weights if w.name in ("kernel", "embeddings"))
        merged[id(kernel)] = layer.kernel if kernel.name == "kernel" else layer.embeddings
    adapters = {id(w) for backbone in transformer_backbones(model) for w in backbone.adapter_weights()}
    source = [w for w in model.weights if id(w) not in adapters]
    if [(w.path, tuple(w.shape)) for w in source] != [(w.path, tuple(w.shape)) for w in fresh.weights]:
        raise ValueError(f"Could not rebuild {model.name!r} without its adapters: its variables differ.")
    for target, weight in zip(fresh.weights, source):
        target.assign(merged.get(id(weight), weight))
    if quantize:
        with warnings.catch_warnings(), _collections_of_new_objects_only():
            # Keras warns once per layer kind it leaves in float
            warnings.filterwarnings("ignore", "Layer .* does not have a `quantize` method", UserWarning)
            fresh.quantize(config=_quantization_config(quantize))
    if model.compiled:  # the copy evaluates like the original (loss, metrics)
        fresh.compile_from_config(model.get_compile_config())
    return fresh


@contextlib.contextmanager
def _collections_of_new_objects_only():
    """Keras' ``Layer.__delattr__`` runs a full ``gc.collect()`` for every kernel that ``quantize``
    replaces: in a process holding many objects that is seconds per layer. Frozen (``gc.freeze``),
    the objects that existed before are skipped by those collections; one full collection at the
    end frees what they kept (the float kernels, if a cycle held them). A heap the caller froze
    stays as the caller left it."""
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()
            gc.collect()


def _quantization_config(method: str):
    """Keras' int8 config for ``method``: weight-only (no activation quantizer) or Keras' default."""
    if method == "int8":
        return keras.quantizers.Int8QuantizationConfig(weight_quantizer=None, activation_quantizer=None)
    return keras.quantizers.Int8QuantizationConfig()


def _without_lora(config):
    """A model config with every ``lora`` entry (a ``TransformerModel``'s adapters) removed."""
    if isinstance(config, dict):
        return {k: _without_lora(v) for k, v in config.items() if k != "lora"}
    if isinstance(config, list):
        return [_without_lora(v) for v in config]
    return copy.copy(config)
