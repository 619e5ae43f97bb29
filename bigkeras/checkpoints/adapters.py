"""LoRA adapter checkpoints: only what fine-tuning trained, tied to the base model it needs.

``save_adapters`` writes the adapters and the task head (every trainable variable of a LoRA
model, keyed by its path in the model) to one safetensors file whose metadata records the
rank, alpha, targets and, for each backbone, its name and the SHA-256 of its pre-trained
weights. ``load_adapters`` puts them into a fresh base model (enabling LoRA with the recorded
settings), after checking that the base, the rank and every tensor match.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from bigkeras.checkpoints.huggingface import read_safetensors
from bigkeras.checkpoints.mapping import CheckpointError, keras_value
from bigkeras.models.base import transformer_backbones

FORMAT = "bigkeras-lora-1"


def base_fingerprint(backbone) -> str:
    """SHA-256 of a backbone's pre-trained weights (everything but adapters), in order."""
    digest = hashlib.sha256()
    for variable in backbone.base_weights():
        digest.update(np.ascontiguousarray(keras_value(variable), dtype=np.float32).tobytes())
    return digest.hexdigest()


def save_adapters(model, path: str | os.PathLike) -> pathlib.Path:
    """Write the LoRA adapters and the head of ``model`` (its trainable variables).

    Args:
        model: a model whose bigkeras Transformer backbone has LoRA enabled.
        path: the ``.safetensors`` file to write.

    Returns:
        The path.

    Raises:
        CheckpointError: ``model`` has no backbone with LoRA enabled.
    """
    from safetensors.numpy import save_file

    backbones = [b for b in transformer_backbones(model) if b.lora]
    if not backbones:
        raise CheckpointError(f"save_adapters needs a model with LoRA enabled; {model.name!r} has no adapters.")
    tensors = {v.path: np.ascontiguousarray(keras_value(v), dtype=np.float32) for v in model.trainable_weights}
    metadata = {
        "format": FORMAT,
        "lora": json.dumps(backbones[0].lora),
        "bases": json.dumps([{"name": b.name, "sha256": base_fingerprint(b)} for b in backbones]),
    }
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_adapters(model, path: str | os.PathLike):
    """Load adapters saved by ``save_adapters`` into ``model``, its base model.

    ``model`` is the pre-trained model the adapters were trained on (e.g. a fresh
    ``checkpoints.load_model(..., num_classes=2)``); LoRA is enabled on it with the recorded
    rank, alpha and targets unless it already is, with the same settings.

    Returns:
        ``model``, with the adapters and head weights assigned.

    Raises:
        CheckpointError: a file that is not an adapter file, a different base model (name or
            weights' SHA-256), a different LoRA rank, alpha or targets, or a missing,
            unexpected or misshapen tensor. Nothing is assigned when it raises.
    """
    from safetensors import safe_open

    path = pathlib.Path(path)
    tensors = read_safetensors(path)
    with safe_open(str(path), "np") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bigkeras LoRA adapter file (format {metadata.get('format')!r}).")
    lora, bases = json.loads(metadata["lora"]), json.loads(metadata["bases"])
    backbones = transformer_backbones(model)
    if len(backbones) != len(bases):
        raise CheckpointError(
            f"{path} adapts {len(bases)} backbone(s) ({', '.join(b['name'] for b in bases)}); "
            f"{model.name!r} has {len(backbones)}."
        )
    for backbone, base in zip(backbones, bases):
        fingerprint = base_fingerprint(backbone)
        if (backbone.name, fingerprint) != (base["name"], base["sha256"]):
            raise CheckpointError(
                f"{path} was trained on base model {base['name']!r} (weights sha256 {base['sha256'][:16]}...); "
                f"{model.name!r} has {backbone.name!r} (sha256 {fingerprint[:16]}...): a different base model."
            )
        if backbone.lora and backbone.lora != lora:
            raise CheckpointError(
                f"{path} holds LoRA {lora}; {backbone.name!r} already has LoRA {backbone.lora} "
                "(rank, alpha and targets must match)."
            )
    for backbone in backbones:
        if not backbone.lora:
            backbone.enable_lora(lora["rank"], alpha=lora["alpha"], targets=lora["targets"])
    variables = {v.path: v for v in model.trainable_weights}
    missing, unexpected = sorted(set(variables) - set(tensors)), sorted(set(tensors) - set(variables))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {model.name!r}: missing {missing[:4]}, unexpected {unexpected[:4]}."
        )
    for key, variable in variables.items():
        if tuple(tensors[key].shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the model's {tuple(variable.shape)}."
            )
    for key, variable in variables.items():
        variable.assign(tensors[key])
    return model
