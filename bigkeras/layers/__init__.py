"""Reusable layers, registered for ``.keras`` loading without ``custom_objects``."""

from bigkeras.layers.transformer import (
    MaskedMeanPooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)
from bigkeras.layers.tokenizers import HuggingFaceBertTokenizer

__all__ = ["HuggingFaceBertTokenizer", "MaskedMeanPooling", "TokenAndPositionEmbedding", "TransformerEncoderBlock"]
