"""Encoder-decoder Transformer for translation (Vaswani et al., 2017).

A bidirectional encoder over the source, a causal decoder with cross-attention over the
encoder's outputs, sinusoidal positions, and output logits tied to the target embedding
(and, with a shared vocabulary, to the source embedding too: the paper's three-way tying).
Train with teacher forcing; decode with ``bigkeras.generation.generate(..., start_token_id=)``
(greedy, sampling, or ``sampler="beam"``), cached.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers.decoder import (
    PositionIds,
    SinusoidalPositionEncoding,
    TransformerDecoderBlock,
    cache_step_mask,
    position_ids,
)
from bigkeras.layers.transformer import TransformerEncoderBlock
from bigkeras.models.base import TransformerModel, int_inputs
from bigkeras.registry import register_family

PRESETS = {
    # Vaswani et al. (2017) "base": 6+6 layers, d_model 512, 8 heads, d_ff 2048, dropout 0.1,
    # a shared 37,000-token vocabulary with tied embeddings: 63,084,544 parameters with the
    # default pre-norm blocks (63,082,496 post-norm, as in the paper, which reports 65M).
    "transformer_base": {
        "vocab_size": 37000,
        "num_encoder_layers": 6,
        "num_decoder_layers": 6,
        "hidden_dim": 512,
        "num_heads": 8,
        "intermediate_dim": 2048,
        "dropout": 0.1,
    },
    "tiny": {
        "vocab_size": 32,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "hidden_dim": 32,
        "num_heads": 2,
        "intermediate_dim": 64,
        "dropout": 0.0,
    },
}


def seq2seq(**kwargs) -> Seq2Seq:
    """Build a ``Seq2Seq`` encoder-decoder from its keyword arguments; see that class."""
    return Seq2Seq(**kwargs)


@keras.saving.register_keras_serializable(package="bigkeras")
class Seq2Seq(TransformerModel):
    """An encoder-decoder Transformer for teacher-forced training, with exposed parts.

    Vaswani et al., 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762).
    Embeddings are scaled by ``sqrt(hidden_dim)`` and summed with sinusoidal encodings of
    positions that skip padding (a left-padded source encodes like the unpadded one).

    Args:
        vocab_size: int, the source vocabulary; also the target's when ``target_vocab_size``
            is None (one embedding for source, target and output).
        target_vocab_size: optional int, a separate target vocabulary with its own embedding
            (tied to the output projection). Default None (shared).
        num_encoder_layers: int, the encoder blocks.
        num_decoder_layers: int, the decoder blocks.
        hidden_dim: int, the model width; even and divisible by ``num_heads``.
        num_heads: int, the attention heads.
        intermediate_dim: int, the feed-forward width.
        dropout: float in [0, 1). Default 0.
        activation: str, the feed-forward activation. Default ``"relu"`` (the paper's).
        norm_first: bool, pre-norm blocks with a final norm on each side (True, default,
            stable without warm-up) or the paper's post-norm blocks.
        layer_norm_epsilon: float. Default 1e-5.
        name: str, the model name and layer-name prefix.

    Inputs and outputs: int inputs ``encoder_token_ids`` and
        ``encoder_padding_mask`` ``(batch, src)``, ``decoder_token_ids`` (the target shifted
        right, starting with a start token) and ``decoder_padding_mask`` ``(batch, tgt)``, and
        float32 ``logits`` ``(batch, tgt, target vocab)``: position ``i`` predicts target
        token ``i``.

    Parts (attributes): ``source_embedding`` and ``target_embedding`` (one
    ``ReversibleEmbedding`` when the vocabulary is shared; the target's is tied to the output
    projection), ``embedding_scale``, ``position_encoding``, ``encoder_blocks``,
    ``decoder_blocks`` (each with ``self_attention``, ``cross_attention_layer`` and the
    feed-forward layers), ``encoder_norm`` and ``decoder_norm`` (None for post-norm models).

    Example:
        >>> model = seq2seq(**PRESETS["tiny"])
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        target_vocab_size: int | None = None,
        num_encoder_layers: int,
        num_decoder_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = True,
        layer_norm_epsilon: float = 1e-5,
        name: str = "seq2seq",
        **kwargs,
    ):
        arguments = dict(
            vocab_size=vocab_size,
            target_vocab_size=target_vocab_size,
            num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
            layer_norm_epsilon=layer_norm_epsilon,
        )
        checks.positive_int("vocab_size", vocab_size)
        if target_vocab_size is not None:
            checks.positive_int("target_vocab_size", target_vocab_size)
        checks.positive_int("num_encoder_layers", num_encoder_layers)
        checks.positive_int("num_decoder_layers", num_decoder_layers)
        checks.fraction("dropout", dropout)

        inputs, logits, parts = _graph(name, **arguments)
        super().__init__(inputs, logits, arguments=arguments, parts=parts, name=name, **kwargs)

    def role_layers(self):
        """LoRA roles over both stacks: ``query``, ``key``, ``value`` (the decoder's fused
        self-attention ``qkv`` and cross-attention ``key_value`` where they serve the role),
        ``attention_output``, ``ffn``."""
        encoder = [block.attention for block in self.encoder_blocks]
        self_attention = [block.self_attention for block in self.decoder_blocks]
        cross = [block.cross_attention_layer for block in self.decoder_blocks]
        qkv = [a.qkv for a in self_attention]
        blocks = [*self.encoder_blocks, *self.decoder_blocks]
        return {
            "query": [a.query_dense for a in encoder] + qkv + [c.query for c in cross],
            "key": [a.key_dense for a in encoder] + qkv + [c.key_value for c in cross],
            "value": [a.value_dense for a in encoder] + qkv + [c.key_value for c in cross],
            "attention_output": [a.output_dense for a in (*encoder, *self_attention, *cross)],
            "ffn": [layer for b in blocks for layer in (b.ffn_intermediate, b.ffn_output)],
        }


def _graph(
    name, *, vocab_size, target_vocab_size, num_encoder_layers, num_decoder_layers, hidden_dim, num_heads,
    intermediate_dim, dropout, activation, norm_first, layer_norm_epsilon,
):
    """The ``Seq2Seq`` graph: its inputs, its logits and its parts (attribute name -> layers)."""
    inputs = int_inputs("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask")
    encoder_ids, encoder_mask, decoder_ids, decoder_mask = inputs.values()

    def embedding(vocab, prefix):
        return layers.ReversibleEmbedding(
            vocab, hidden_dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
            name=f"{prefix}_token_embedding",
        )

    source_embedding = embedding(vocab_size, f"{name}_encoder" if target_vocab_size else name)
    target_embedding = embedding(target_vocab_size, f"{name}_decoder") if target_vocab_size else source_embedding
    positions = SinusoidalPositionEncoding(hidden_dim=hidden_dim, name=f"{name}_position_encoding")
    scale = layers.Rescaling(math.sqrt(hidden_dim), name=f"{name}_embedding_scale")

    def final_norm(layer_name):  # pre-norm stacks end with a norm; post-norm ones have none
        return layers.LayerNormalization(epsilon=layer_norm_epsilon, name=layer_name) if norm_first else None

    block_args = {
        "hidden_dim": hidden_dim, "num_heads": num_heads, "intermediate_dim": intermediate_dim,
        "dropout": dropout, "activation": activation, "norm_first": norm_first,
        "layer_norm_epsilon": layer_norm_epsilon,
    }

    # Encoder: (batch, src) -> (batch, src, hidden).
    x = scale(source_embedding(encoder_ids))
    x = layers.Add(name=f"{name}_encoder_embeddings_add")(
        [x, positions(PositionIds(name=f"{name}_encoder_position_ids")(encoder_mask))]
    )
    x = layers.Dropout(dropout, name=f"{name}_encoder_embeddings_dropout")(x)
    encoder_blocks = [
        TransformerEncoderBlock(**block_args, name=f"{name}_encoder_block{i}") for i in range(num_encoder_layers)
    ]
    for block in encoder_blocks:
        x = block(x, padding_mask=encoder_mask)
    encoder_norm = final_norm(f"{name}_encoder_final_norm")
    encoder_outputs = x if encoder_norm is None else encoder_norm(x)

    # Decoder: (batch, tgt) -> (batch, tgt, hidden), attending to the encoder outputs.
    y = scale(target_embedding(decoder_ids))
    y = layers.Add(name=f"{name}_decoder_embeddings_add")(
        [y, positions(PositionIds(name=f"{name}_decoder_position_ids")(decoder_mask))]
    )
    y = layers.Dropout(dropout, name=f"{name}_decoder_embeddings_dropout")(y)
    decoder_blocks = [
        TransformerDecoderBlock(**block_args, cross_attention=True, name=f"{name}_decoder_block{i}")
        for i in range(num_decoder_layers)
    ]
    for block in decoder_blocks:
        y = block(y, padding_mask=decoder_mask, context=encoder_outputs, context_mask=encoder_mask)
    decoder_norm = final_norm(f"{name}_decoder_final_norm")
    if decoder_norm is not None:
        y = decoder_norm(y)
    logits = target_embedding(y, reverse=True)  # (batch, tgt, target vocab)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    parts = dict(
        source_embedding=source_embedding, target_embedding=target_embedding, embedding_scale=scale,
        position_encoding=positions, encoder_blocks=encoder_blocks, decoder_blocks=decoder_blocks,
        encoder_norm=encoder_norm, decoder_norm=decoder_norm,
    )
    return inputs, logits, parts


class CachedSeq2Seq:
    """Cached decoding over a built ``seq2seq`` model's own layers.

    The encoder runs once; each decoder block's cross-attention keys and values are projected
    once; each step runs one target position. Every cache leaf has the batch first (beam
    search expands and reorders it).
    """

    def __init__(self, model: Seq2Seq):
        if not isinstance(model, Seq2Seq):
            raise TypeError(
                f"CachedSeq2Seq needs a bigkeras `Seq2Seq` model (from `seq2seq(...)`), got {type(model).__name__}."
            )
        self.scale, self.positions = model.embedding_scale, model.position_encoding
        self.source_embedding, self.target_embedding = model.source_embedding, model.target_embedding
        self.encoder_blocks, self.decoder_blocks = list(model.encoder_blocks), list(model.decoder_blocks)
        self.encoder_norm, self.decoder_norm = model.encoder_norm, model.decoder_norm

    def init_cache(self, encoder_ids, encoder_mask, max_length):
        """Encode the source; return the decoder cache for ``max_length`` target positions."""
        x = self.scale(self.source_embedding(encoder_ids)) + self.positions(position_ids(encoder_mask))
        for block in self.encoder_blocks:
            x = block(x, padding_mask=encoder_mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        batch = ops.shape(encoder_ids)[0]
        head_dim = self.decoder_blocks[0].hidden_dim // self.decoder_blocks[0].num_heads
        empty = ops.zeros((batch, self.decoder_blocks[0].num_heads, max_length, head_dim), x.dtype)
        return {
            "encoder_mask": encoder_mask,
            "cross": tuple(block.project_context(x) for block in self.decoder_blocks),
            "self": tuple((empty, empty) for _ in self.decoder_blocks),
            "mask": ops.ones((batch, max_length), "int32"),
        }

    def step(self, sequence, index, cache):
        """Logits ``(batch, target vocab)`` predicting position ``index + 1`` of ``sequence``."""
        token_ids = sequence[:, index]  # (batch,): one position, run as (batch, hidden)
        position = ops.zeros_like(token_ids) + index
        y = self.scale(self.target_embedding(token_ids)) + self.positions(position)
        attend_mask = cache_step_mask(cache["mask"], index)
        caches = []
        for block, self_cache, cross_kv in zip(self.decoder_blocks, cache["self"], cache["cross"]):
            y, self_cache = block.step(y, self_cache, attend_mask, index, cross_kv, cache["encoder_mask"])
            caches.append(self_cache)
        if self.decoder_norm is not None:
            y = self.decoder_norm(y)
        logits = ops.cast(self.target_embedding(y, reverse=True), "float32")
        return logits, {**cache, "self": tuple(caches)}


register_family("seq2seq", seq2seq, PRESETS)
