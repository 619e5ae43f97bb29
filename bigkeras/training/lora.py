"""LoRA in the harness: adapters on a model's bigkeras Transformer backbone, the rest frozen."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

from bigkeras.models.base import LORA_TARGETS, TransformerModel, transformer_backbones


def enable_lora(model: keras.Model, *, rank: int, alpha: float | None = None,
                targets: Sequence[str] = LORA_TARGETS) -> list[TransformerModel]:  # fmt: skip
    """Add LoRA adapters to ``model``'s backbone(s) (``TransformerModel.enable_lora``).

    Everything in the backbone but the adapters is frozen; layers outside it (a task head)
    keep training. Prints how many parameters train.

    Returns:
        The backbones that got adapters.

    Raises:
        ValueError: ``model`` has no bigkeras Transformer backbone, or a bad rank or target.
    """
    backbones = transformer_backbones(model)
    if not backbones:
        raise ValueError(
            f"`lora_rank` needs a model built on a bigkeras Transformer (BertBackbone, GPT, Seq2Seq); "
            f"{model.name!r} has none."
        )
    for backbone in backbones:
        backbone.enable_lora(rank, alpha=alpha, targets=targets)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = model.count_params()
    print(f"LoRA rank {rank} on {', '.join(targets)}: {trainable:,} of {total:,} parameters train "
          f"({100 * trainable / total:.2f}%)", flush=True)  # fmt: skip
    return backbones
