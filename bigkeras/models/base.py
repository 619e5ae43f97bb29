"""The base class of the Transformer families' models: a functional model with named parts.

keras-hub's backbones set the pattern: the model is an ordinary functional ``keras.Model``
(its graph, summary and ``.keras`` file are a functional model's), built by the subclass's
constructor from plain keyword arguments, and it keeps handles on its parts (the token
embedding, the list of blocks, the final norm...) as attributes. Cached decoding, checkpoint
converters, LoRA targeting and serving reach the layers through those attributes, never by
building layer-name strings. ``get_config()`` returns the constructor arguments, so a
``.keras`` file loads back into the same class with the same parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

LORA_TARGETS = ("query", "value")  # Hu et al. (2021) adapt the query and value projections


class TransformerModel(keras.Model):
    """A functional ``keras.Model`` that exposes its parts and rebuilds from its arguments.

    Subclasses build their graph in ``__init__`` and finish with
    ``super().__init__(inputs, outputs, arguments=..., parts=..., name=name, **kwargs)``.

    Subclasses also name their projections by role (``role_layers``), which is how LoRA
    adapters are targeted (``enable_lora``).

    Args:
        inputs, outputs: the functional graph's inputs and outputs.
        arguments: the subclass's constructor arguments (JSON-serialisable), returned by
            ``get_config()``.
        parts: attribute name -> layer (or list of layers, or None) to expose.
        lora: optional ``enable_lora`` arguments, applied once the model is built (so a
            ``.keras`` file of a LoRA model loads back with its adapters).
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).
    """

    def __init__(
        self, inputs, outputs, *, arguments: Mapping[str, Any], parts: Mapping[str, Any], lora=None, **kwargs
    ):
        super().__init__(inputs, outputs, **kwargs)
        self.arguments = dict(arguments)
        for attribute, part in parts.items():
            setattr(self, attribute, part)
        self.lora, self.lora_layers = None, []
        if lora:
            self.enable_lora(**lora)

    def role_layers(self) -> dict[str, list[keras.layers.Layer]]:
        """Role (``"query"``, ``"value"``, ``"ffn"``...) -> the projection layers in that role."""
        raise NotImplementedError

    def enable_lora(self, rank: int, *, alpha: float | None = None, targets: Sequence[str] = LORA_TARGETS):
        """Freeze the model and add trainable low-rank adapters to the ``targets`` projections.

        Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models": each target
        kernel ``W`` becomes ``W + (alpha / rank) A B`` with ``A`` ``(in, rank)`` and ``B``
        ``(rank, out)`` trained and ``W`` frozen (Keras' own ``layer.enable_lora``). Every other
        weight of this model, biases and norms included, is frozen; layers outside it (a task
        head) are untouched.

        Args:
            rank: int, the adapters' rank.
            alpha: float, the scale numerator. Default ``rank`` (a scale of 1).
            targets: roles of ``role_layers()``. Default ``("query", "value")``.

        Raises:
            ValueError: a bad rank, an unknown role (the known ones are listed), or LoRA
                already enabled.
        """
        from bigkeras import checks

        checks.positive_int("rank", rank)
        roles = self.role_layers()
        unknown = [t for t in targets if t not in roles]
        if unknown or not targets:
            raise ValueError(f"`lora_targets` {list(targets)} of {self.name!r}: roles are {', '.join(roles)}.")
        if self.lora:
            raise ValueError(f"LoRA is already enabled on {self.name!r} ({self.lora}).")
        chosen = list({id(layer): layer for t in targets for layer in roles[t]}.values())
        for layer in self.layers:  # each layer (and its sub-layers); the model's own flag stays
            layer.trainable = False
        for layer in chosen:
            layer.trainable = True
            layer.enable_lora(rank, lora_alpha=alpha)  # freezes the kernel, adds lora_kernel_a/b
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
        self.lora = {"rank": rank, "alpha": alpha, "targets": list(targets)}
        self.lora_layers = chosen

    def adapter_weights(self) -> list:
        """The LoRA adapter variables (``lora_kernel_a``, ``lora_kernel_b``), in layer order."""
        return [w for layer in self.lora_layers for w in (layer.lora_kernel_a, layer.lora_kernel_b)]

    def base_weights(self) -> list:
        """Every variable but the LoRA adapters, in ``weights`` order: the pre-trained model."""
        adapters = {id(w) for w in self.adapter_weights()}
        return [w for w in self.weights if id(w) not in adapters]

    def get_config(self):
        # Not the functional graph's config: the arguments that rebuild this class.
        config = {"name": self.name, "trainable": self.trainable, **self.arguments}
        return {**config, "lora": self.lora} if self.lora else config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def int_inputs(*names: str) -> dict[str, keras.KerasTensor]:
    """Named int32 ``(batch, seq)`` inputs, in order: ``int_inputs("token_ids", "padding_mask")``."""
    return {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in names}


def transformer_backbones(model: keras.Model) -> list[TransformerModel]:
    """The bigkeras Transformer models in ``model``: itself, or those nested in it."""
    if isinstance(model, TransformerModel):
        return [model]
    return [layer for layer in model.layers if isinstance(layer, TransformerModel)]
