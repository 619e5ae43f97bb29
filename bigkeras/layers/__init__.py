"""Reusable layers, registered for ``.keras`` loading without ``custom_objects``."""

from bigkeras.layers.transformer import (
    MaskedMeanPooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)

__all__ = ["MaskedMeanPooling", "TokenAndPositionEmbedding", "TransformerEncoderBlock"]
