"""Reusable layers, registered for ``.keras`` loading without ``custom_objects``."""

from bigkeras.layers.transformer import (
    MaskedMeanPooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)
from bigkeras.layers.t5 import RelativePositionBias, RMSNorm, T5Attention, T5Block
from bigkeras.layers.tokenizers import HuggingFaceBertTokenizer

__all__ = ["HuggingFaceBertTokenizer", "MaskedMeanPooling", "RMSNorm", "RelativePositionBias", "T5Attention", "T5Block",
           "TokenAndPositionEmbedding", "TransformerEncoderBlock"]
