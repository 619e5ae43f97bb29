"""T5: the text-to-text encoder-decoder (Raffel et al., 2019), T5 1.0 and T5 1.1 shapes.

Relative position buckets (a learned bias per head, bidirectional in the encoder, causal in the
decoder, owned by the first block of each stack and reused by all its blocks), RMS norm
without bias or centering, no biases anywhere, no attention scaling, a ReLU (T5 1.0) or gated
GELU (T5 1.1) feed-forward, and one embedding for encoder and decoder inputs, tied to the
output projection (T5 1.0, with the decoder output rescaled by ``1/sqrt(hidden_dim)``) or not
(T5 1.1). Every task is text to text: ``"translate English to German: ..."``.

Hugging Face ``T5ForConditionalGeneration`` directories load with
``bigkeras.checkpoints.load_model`` and are written by ``save_hf``; decode with
``bigkeras.generation.generate(model, ids, n, start_token_id=0, stop_token_ids=[1])``
(cached, one ``tf.while_loop``; T5 starts the decoder with the padding id 0 and ends with 1).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers.decoder import cache_step_mask
from bigkeras.layers.t5 import RMSNorm, T5Block, attention_bias, padding_mask_4d
from bigkeras.models.base import TransformerModel, int_inputs
from bigkeras.registry import register_family

_T5_1_0 = {"vocab_size": 32128, "key_value_dim": 64, "dropout": 0.1, "activation": "relu",
           "use_gated_activation": False, "tie_embeddings": True}  # fmt: skip
_T5_1_1 = {**_T5_1_0, "activation": "gelu_approximate", "use_gated_activation": True, "tie_embeddings": False}

PRESETS = {
    # google-t5/t5-small: 60,506,624 parameters, as Hugging Face and keras-hub count them.
    "t5_small": {**_T5_1_0, "num_encoder_layers": 6, "num_decoder_layers": 6, "hidden_dim": 512, "num_heads": 8,
                 "intermediate_dim": 2048},
    # google-t5/t5-base: 222,903,552 parameters.
    "t5_base": {**_T5_1_0, "num_encoder_layers": 12, "num_decoder_layers": 12, "hidden_dim": 768, "num_heads": 12,
                "intermediate_dim": 3072},
    # google/t5-v1_1-small: 76,961,152 parameters (untied output projection).
    "t5_1_1_small": {**_T5_1_1, "num_encoder_layers": 8, "num_decoder_layers": 8, "hidden_dim": 512, "num_heads": 6,
                     "intermediate_dim": 1024},
    # google/t5-v1_1-base: 247,577,856 parameters.
    "t5_1_1_base": {**_T5_1_1, "num_encoder_layers": 12, "num_decoder_layers": 12, "hidden_dim": 768,
                    "num_heads": 12, "intermediate_dim": 2048},
    "tiny": {"vocab_size": 64, "num_encoder_layers": 2, "num_decoder_layers": 2, "hidden_dim": 32, "num_heads": 2,
             "key_value_dim": 16, "intermediate_dim": 64, "dropout": 0.0, "activation": "relu",
             "use_gated_activation": False, "tie_embeddings": True},
}


def t5(**kwargs) -> T5:
    """Build a ``T5`` encoder-decoder from its keyword arguments; see that class."""
    return T5(**kwargs)


@keras.saving.register_keras_serializable(package="bigkeras")
class T5(TransformerModel):
    """The T5 encoder-decoder, a functional model that exposes its parts.

    Raffel et al., 2019, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
    Transformer" (https://arxiv.org/abs/1910.10683). T5 1.1 (gated GELU, untied output
    projection): Shazeer, 2020, "GLU Variants Improve Transformer".

    Args:
        vocab_size: int, the shared source/target vocabulary.
        num_encoder_layers: int, the encoder blocks.
        num_decoder_layers: int, the decoder blocks.
        hidden_dim: int, the model width (``d_model``).
        num_heads: int, the attention heads.
        intermediate_dim: int, the feed-forward width (``d_ff``).
        key_value_dim: optional int, the width of each head (``d_kv``). Default
            ``hidden_dim // num_heads``.
        dropout: float in [0, 1). Default 0.1 (T5's).
        activation: str, ``"relu"`` (T5 1.0, default) or ``"gelu_approximate"`` (T5 1.1's
            ``gelu_new``, the tanh approximation); any Keras activation name works.
        use_gated_activation: bool, the gated feed-forward ``act(x W0) * (x W1)`` of T5 1.1.
            Default False.
        tie_embeddings: bool, the output projection is the token embedding, applied to the
            decoder output times ``hidden_dim ** -0.5`` (T5 1.0, default), or a separate
            ``(hidden, vocab)`` matrix without the rescale (T5 1.1).
        layer_norm_epsilon: float. Default 1e-6.
        num_buckets: int, relative-position buckets. Default 32.
        max_distance: int, the distance past which positions share a bucket. Default 128.
        name: str, the model name and layer-name prefix.

    Inputs and outputs: int ``encoder_token_ids`` and ``encoder_padding_mask`` ``(batch, src)``,
    ``decoder_token_ids`` (the target shifted right, starting with T5's start id 0) and
    ``decoder_padding_mask`` ``(batch, tgt)``; float32 ``logits`` ``(batch, tgt, vocab)``.

    Parts (attributes): ``token_embedding`` (a ``ReversibleEmbedding`` shared by both stacks;
    with ``tie_embeddings=False`` it holds the separate output projection as
    ``reverse_embeddings``), ``encoder_blocks`` and ``decoder_blocks`` (``T5Block`` lists; the
    first of each owns ``position_bias``), ``encoder_norm``, ``decoder_norm``, and
    ``encoder_position_bias``/``decoder_position_bias`` (the first blocks' bias layers).

    Example:
        >>> model = t5(**PRESETS["tiny"])
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        key_value_dim: int | None = None,
        dropout: float = 0.1,
        activation: str = "relu",
        use_gated_activation: bool = False,
        tie_embeddings: bool = True,
        layer_norm_epsilon: float = 1e-6,
        num_buckets: int = 32,
        max_distance: int = 128,
        name: str = "t5",
        **kwargs,
    ):
        checks.positive_int("vocab_size", vocab_size)
        checks.positive_int("num_encoder_layers", num_encoder_layers)
        checks.positive_int("num_decoder_layers", num_decoder_layers)
        checks.positive_int("hidden_dim", hidden_dim)
        checks.positive_int("num_heads", num_heads)
        if key_value_dim is None:
            if hidden_dim % num_heads:
                raise ValueError(
                    f"`hidden_dim` ({hidden_dim}) must be divisible by `num_heads` ({num_heads}), or pass "
                    "`key_value_dim`."
                )
            key_value_dim = hidden_dim // num_heads
        checks.positive_int("key_value_dim", key_value_dim)
        checks.fraction("dropout", dropout)
        arguments = dict(
            vocab_size=vocab_size, num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers,
            hidden_dim=hidden_dim, num_heads=num_heads, intermediate_dim=intermediate_dim, key_value_dim=key_value_dim,
            dropout=dropout, activation=activation, use_gated_activation=bool(use_gated_activation),
            tie_embeddings=bool(tie_embeddings), layer_norm_epsilon=layer_norm_epsilon, num_buckets=num_buckets,
            max_distance=max_distance,
        )

        inputs, logits, parts = _graph(name, **arguments)
        super().__init__(inputs, logits, arguments=arguments, parts=parts, name=name, **kwargs)

    def role_layers(self):
        """LoRA roles over both stacks: ``query``, ``key``, ``value``, ``attention_output``
        (self- and cross-attention) and ``ffn`` (every feed-forward projection)."""
        attentions = [b.self_attention for b in self.encoder_blocks]
        for block in self.decoder_blocks:
            attentions += [block.self_attention, block.cross_attention]
        blocks = [*self.encoder_blocks, *self.decoder_blocks]
        return {
            "query": [a.query_dense for a in attentions],
            "key": [a.key_dense for a in attentions],
            "value": [a.value_dense for a in attentions],
            "attention_output": [a.output_dense for a in attentions],
            "ffn": [d for b in blocks for d in (b.ffn_intermediate, b.ffn_gate, b.ffn_output) if d is not None],
        }


def _graph(
    name, *, vocab_size, num_encoder_layers, num_decoder_layers, hidden_dim, num_heads, intermediate_dim,
    key_value_dim, dropout, activation, use_gated_activation, tie_embeddings, layer_norm_epsilon, num_buckets,
    max_distance,
):
    """The ``T5`` graph: its inputs, its logits and its parts (attribute name -> layers)."""
    inputs = int_inputs("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask")
    encoder_ids, encoder_mask, decoder_ids, decoder_mask = inputs.values()

    token_embedding = layers.ReversibleEmbedding(
        vocab_size, hidden_dim, tie_weights=bool(tie_embeddings),
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),  # Hugging Face's
        name=f"{name}_token_embedding",
    )
    block_args = dict(
        hidden_dim=hidden_dim, num_heads=num_heads, key_value_dim=key_value_dim,
        intermediate_dim=intermediate_dim, dropout=dropout, activation=activation,
        use_gated_activation=use_gated_activation, layer_norm_epsilon=layer_norm_epsilon,
        num_buckets=num_buckets, max_distance=max_distance,
    )

    def stack(side, count):
        return [
            T5Block(**block_args, is_decoder=side == "decoder", relative_attention_bias=i == 0,
                    name=f"{name}_{side}_block{i}")
            for i in range(count)
        ]

    encoder_blocks, decoder_blocks = stack("encoder", num_encoder_layers), stack("decoder", num_decoder_layers)
    encoder_norm = RMSNorm(epsilon=layer_norm_epsilon, name=f"{name}_encoder_final_norm")
    decoder_norm = RMSNorm(epsilon=layer_norm_epsilon, name=f"{name}_decoder_final_norm")

    # Encoder: (batch, src) -> (batch, src, hidden). The first block computes the bias.
    x = layers.Dropout(dropout, name=f"{name}_encoder_embeddings_dropout")(token_embedding(encoder_ids))
    bias = None
    for block in encoder_blocks:
        x, bias = block(x, bias=bias, padding_mask=encoder_mask)
    x = layers.Dropout(dropout, name=f"{name}_encoder_output_dropout")(encoder_norm(x))

    # Decoder: (batch, tgt) -> (batch, tgt, hidden), attending to the encoder outputs.
    y = layers.Dropout(dropout, name=f"{name}_decoder_embeddings_dropout")(token_embedding(decoder_ids))
    bias = None
    for block in decoder_blocks:
        y, bias = block(y, bias=bias, padding_mask=decoder_mask, context=x, context_mask=encoder_mask)
    y = layers.Dropout(dropout, name=f"{name}_decoder_output_dropout")(decoder_norm(y))
    if tie_embeddings:  # T5 1.0 rescales before the tied projection
        y = layers.Rescaling(hidden_dim**-0.5, name=f"{name}_output_scale")(y)
    logits = token_embedding(y, reverse=True)  # (batch, tgt, vocab)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    parts = dict(
        token_embedding=token_embedding, encoder_blocks=encoder_blocks, decoder_blocks=decoder_blocks,
        encoder_norm=encoder_norm, decoder_norm=decoder_norm,
        encoder_position_bias=encoder_blocks[0].position_bias,
        decoder_position_bias=decoder_blocks[0].position_bias,
    )
    return inputs, logits, parts


class CachedT5:
    """Cached decoding over a built ``T5`` model's own layers.

    The encoder runs once, each decoder block's cross-attention keys and values are projected
    once, and each step runs one target position against ``(batch, heads, max_length,
    head_dim)`` self-attention caches, with the relative-position bias computed for that one
    position. Every cache leaf has the batch first (beam search expands and reorders it).
    """

    def __init__(self, model: T5):
        if not isinstance(model, T5):
            raise TypeError(f"CachedT5 needs a bigkeras `T5` model (from `t5(...)`), got {type(model).__name__}.")
        self.embedding = model.token_embedding
        self.encoder_blocks, self.decoder_blocks = list(model.encoder_blocks), list(model.decoder_blocks)
        self.encoder_norm, self.decoder_norm = model.encoder_norm, model.decoder_norm
        self.position_bias = model.decoder_position_bias
        a = model.arguments
        self.heads, self.head_dim = a["num_heads"], a["key_value_dim"]
        self.output_scale = a["hidden_dim"] ** -0.5 if a["tie_embeddings"] else None

    def init_cache(self, encoder_ids, encoder_mask, max_length):
        """Encode the source; return the decoder cache for ``max_length`` target positions."""
        x, bias = self.embedding(encoder_ids), None
        for block in self.encoder_blocks:
            x, bias = block(x, bias=bias, padding_mask=encoder_mask)
        x = self.encoder_norm(x)
        batch = ops.shape(encoder_ids)[0]
        empty = ops.zeros((batch, self.heads, max_length, self.head_dim), x.dtype)
        return {
            "context_bias": attention_bias(padding_mask_4d(encoder_mask)),  # (batch, 1, 1, src)
            "cross": tuple(block.cross_attention.project_context(x) for block in self.decoder_blocks),
            "self": tuple((empty, empty) for _ in self.decoder_blocks),
            "mask": ops.ones((batch, max_length), "int32"),
        }

    def step(self, sequence, index, cache):
        """Logits ``(batch, vocab)`` predicting position ``index + 1`` of ``sequence``."""
        y = self.embedding(sequence[:, index])  # (batch, hidden): one position
        length = tf.shape(cache["mask"])[1]
        bias = attention_bias(cache_step_mask(cache["mask"], index), self.position_bias.row(index, length))
        caches = []
        for block, self_cache, cross_kv in zip(self.decoder_blocks, cache["self"], cache["cross"]):
            y, self_cache = block.step(y, self_cache, bias, index, cross_kv, cache["context_bias"])
            caches.append(self_cache)
        y = self.decoder_norm(y)
        if self.output_scale is not None:
            y = y * self.output_scale
        logits = ops.cast(self.embedding(y, reverse=True), "float32")
        return logits, {**cache, "self": tuple(caches)}


register_family("t5", t5, PRESETS)
