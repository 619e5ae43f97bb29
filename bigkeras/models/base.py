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

from collections.abc import Mapping
from typing import Any

import keras


class TransformerModel(keras.Model):
    """A functional ``keras.Model`` that exposes its parts and rebuilds from its arguments.

    Subclasses build their graph in ``__init__`` and finish with
    ``super().__init__(inputs, outputs, arguments=..., parts=..., name=name, **kwargs)``.

    Args:
        inputs, outputs: the functional graph's inputs and outputs.
        arguments: the subclass's constructor arguments (JSON-serialisable), returned by
            ``get_config()``.
        parts: attribute name -> layer (or list of layers, or None) to expose.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``).
    """

    def __init__(self, inputs, outputs, *, arguments: Mapping[str, Any], parts: Mapping[str, Any], **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self.arguments = dict(arguments)
        for attribute, part in parts.items():
            setattr(self, attribute, part)

    def get_config(self):
        # Not the functional graph's config: the arguments that rebuild this class.
        return {"name": self.name, "trainable": self.trainable, **self.arguments}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
