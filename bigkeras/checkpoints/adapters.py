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
import math
import os
import pathlib

import numpy as np

from bigkeras.checkpoints.common import check_float, read_header, read_metadata, read_tensors
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
    rank, alpha and targets unless it already is, with the same settings. Everything (the
    file's header and metadata, the base model, the LoRA settings, every tensor's name, shape
    and dtype) is checked before the model is touched.

    Returns:
        ``model``, with the adapters and head weights assigned.

    Raises:
        CheckpointError: a file that is not an adapter file, malformed metadata, a rank
            outside 1..the smallest adapted dimension, a different base model (name or
            weights' SHA-256), a different LoRA rank, alpha or targets, or a missing,
            unexpected, misshapen or non-float tensor. The model is unchanged when it raises.
    """
    path = pathlib.Path(path)
    header = read_header(path)
    lora, bases = _settings(path, read_metadata(path))
    backbones = transformer_backbones(model)
    _check_bases(path, model, backbones, bases, lora)
    expected = _expected_variables(path, model, backbones, lora)
    _check_tensors(path, header, expected)
    tensors = read_tensors(path, header)
    for backbone in backbones:
        if not backbone.lora:
            backbone.enable_lora(lora["rank"], alpha=lora["alpha"], targets=lora["targets"])
    variables = {v.path: v for v in model.trainable_weights}
    for key, variable in variables.items():
        variable.assign(np.asarray(tensors[key], dtype=np.float32))
    return model


def _settings(path: pathlib.Path, metadata: dict) -> tuple[dict, list]:
    """``(lora, bases)`` from an adapter file's metadata, each field checked."""
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bigkeras LoRA adapter file (format {metadata.get('format')!r}).")
    lora, bases = _metadata_json(path, metadata, "lora", dict), _metadata_json(path, metadata, "bases", list)
    rank, alpha, targets = lora.get("rank"), lora.get("alpha"), lora.get("targets")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise CheckpointError(f"{path}: metadata field lora.rank={rank!r} must be a positive integer.")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise CheckpointError(f"{path}: metadata field lora.alpha={alpha!r} must be a positive number or null.")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise CheckpointError(f"{path}: metadata field lora.targets={targets!r} must be a list of role names.")
    for i, base in enumerate(bases):
        if not (isinstance(base, dict) and isinstance(base.get("name"), str) and isinstance(base.get("sha256"), str)):
            raise CheckpointError(f"{path}: metadata field bases[{i}]={base!r} must be {{'name': ..., 'sha256': ...}}.")
    return {"rank": rank, "alpha": alpha, "targets": targets}, bases


def _metadata_json(path, metadata: dict, field: str, kind: type):
    try:
        value = json.loads(metadata[field])
    except KeyError:
        raise CheckpointError(f"{path} lacks the metadata field {field!r} of a bigkeras adapter file.") from None
    except (json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"{path}: metadata field {field!r} is not valid JSON: {error}.") from None
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: metadata field {field!r} must be a JSON {kind.__name__}, got {value!r}.")
    return value


def _check_bases(path, model, backbones, bases, lora) -> None:
    """The model has the backbones the adapters were trained on, with compatible LoRA."""
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


def _expected_variables(path, model, backbones, lora) -> dict[str, tuple]:
    """Variable path -> shape of ``model``'s trainable variables once LoRA is enabled, worked out
    without enabling it: the adapters of each target projection and everything outside the
    backbones (the head)."""
    expected = {}
    inside = {id(w) for backbone in backbones for w in backbone.weights}
    for backbone in backbones:
        if backbone.lora:  # already enabled: its adapters are what they are
            expected.update({v.path: tuple(v.shape) for v in backbone.adapter_weights()})
            continue
        roles = backbone.role_layers()
        unknown = [t for t in lora["targets"] if t not in roles]
        if unknown:
            raise CheckpointError(
                f"{path}: metadata lora.targets names {unknown}; {backbone.name!r} has the roles {', '.join(roles)}."
            )
        layers = list({id(layer): layer for t in lora["targets"] for layer in roles[t]}.values())
        _check_rank(path, lora["rank"], layers)
        for layer in layers:
            # Keras' enable_lora: A is (kernel axes but the last..., rank), B is (rank, last axis).
            shape, prefix = tuple(layer.kernel.shape), layer.kernel.path.rpartition("/")[0]
            expected[f"{prefix}/lora_kernel_a"] = (*shape[:-1], lora["rank"])
            expected[f"{prefix}/lora_kernel_b"] = (lora["rank"], shape[-1])
    expected.update({v.path: tuple(v.shape) for v in model.trainable_weights if id(v) not in inside})
    return expected


def _check_rank(path, rank: int, layers) -> None:
    """A rank no larger than the smallest input or output width it adapts (LoRA's bound)."""
    bound = min(min(math.prod(layer.kernel.shape[:-1]), layer.kernel.shape[-1]) for layer in layers)
    if rank > bound:
        raise CheckpointError(
            f"{path}: metadata lora.rank={rank} exceeds {bound}, the smallest width of the projections it adapts; "
            "a LoRA rank lies between 1 and that width."
        )


def _check_tensors(path, header, expected: dict) -> None:
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}.")
    for key, shape in expected.items():
        if header[key].shape != shape:
            raise CheckpointError(f"{path}: tensor {key!r} has shape {header[key].shape}, the model's {shape}.")
    check_float(header, path)
