"""GPT: a decoder-only causal language model (Radford et al., 2019, GPT-2).

Token plus learned position embeddings, pre-norm causal decoder blocks, a final layer norm
and an output projection tied to the token embedding. Generate text with
``bigkeras.generation.generate`` (cached, one ``tf.while_loop``).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers.decoder import PositionIds, TransformerDecoderBlock, cache_step_mask, position_ids
from bigkeras.models.base import TransformerModel, int_inputs
from bigkeras.registry import register_family

PRESETS = {
    # GPT-2 small: 124,439,808 parameters, as keras_hub.models.GPT2Backbone.
    "gpt2_small": {
        "vocab_size": 50257,
        "sequence_length": 1024,
        "num_layers": 12,
        "hidden_dim": 768,
        "num_heads": 12,
        "intermediate_dim": 3072,
        "dropout": 0.1,
    },
    # About 0.8M parameters with a byte-level vocabulary: a few minutes per epoch of a
    # 4 MB corpus at sequence length 128 on 2 CPU cores.
    "gpt_corpus": {
        "vocab_size": 260,
        "sequence_length": 256,
        "num_layers": 4,
        "hidden_dim": 128,
        "num_heads": 4,
        "intermediate_dim": 512,
        "dropout": 0.1,
    },
    "tiny": {
        "vocab_size": 64,
        "sequence_length": 32,
        "num_layers": 2,
        "hidden_dim": 32,
        "num_heads": 2,
        "intermediate_dim": 64,
        "dropout": 0.0,
    },
}


def gpt(**kwargs) -> GPT:
    """Build a ``GPT`` causal language model from its keyword arguments; see that class."""
    return GPT(**kwargs)


@keras.saving.register_keras_serializable(package="bigkeras")
class GPT(TransformerModel):
    """A GPT-2 style causal language model, a functional model that exposes its parts.

    Radford et al., 2019, "Language Models are Unsupervised Multitask Learners".

    Args:
        vocab_size: int, the number of token ids.
        sequence_length: int, the longest sequence (rows of the position table).
        num_layers: int, the decoder blocks.
        hidden_dim: int, the model width; divisible by ``num_heads``.
        num_heads: int, the attention heads per block.
        intermediate_dim: int, the feed-forward width.
        dropout: float in [0, 1), after the embeddings and inside each block. Default 0.
        activation: str, the feed-forward activation: ``"gelu"`` (exact) or
            ``"gelu_approximate"`` (tanh, GPT-2's own). Default ``"gelu"``.
        layer_norm_epsilon: float. Default 1e-5.
        name: str, the model name and layer-name prefix.

    Inputs and outputs: int inputs ``token_ids`` and ``padding_mask``, both ``(batch, seq)``,
    and float32 ``logits`` ``(batch, seq, vocab_size)``: position ``i`` predicts token
    ``i + 1``. Positions skip padding, so prompts may be left-padded.

    Parts (attributes): ``token_embedding`` (a ``ReversibleEmbedding``, tied to the output
    projection), ``position_embedding``, ``blocks`` (the ``TransformerDecoderBlock`` list,
    each with ``self_attention`` (``qkv``, ``output_dense``), ``self_attention_norm``,
    ``ffn_intermediate``, ``ffn_output``, ``ffn_norm``) and ``final_norm``.

    Example:
        >>> model = gpt(**PRESETS["tiny"])
        >>> model({"token_ids": ids, "padding_mask": ids != 0}).shape  # (batch, seq, 64)
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        sequence_length: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        layer_norm_epsilon: float = 1e-5,
        name: str = "gpt",
        **kwargs,
    ):
        checks.positive_int("vocab_size", vocab_size)
        checks.positive_int("sequence_length", sequence_length)
        checks.positive_int("num_layers", num_layers)
        checks.positive_int("intermediate_dim", intermediate_dim)
        checks.fraction("dropout", dropout)
        arguments = dict(
            vocab_size=vocab_size, sequence_length=sequence_length, num_layers=num_layers, hidden_dim=hidden_dim,
            num_heads=num_heads, intermediate_dim=intermediate_dim, dropout=dropout, activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
        )

        inputs = int_inputs("token_ids", "padding_mask")
        token_ids, padding_mask = inputs.values()

        token_embedding = layers.ReversibleEmbedding(
            vocab_size, hidden_dim, embeddings_initializer=_init(), name=f"{name}_token_embedding"
        )
        position_embedding = layers.Embedding(
            sequence_length, hidden_dim, embeddings_initializer=_init(), name=f"{name}_position_embedding"
        )
        positions = PositionIds(name=f"{name}_position_ids")(padding_mask)
        x = layers.Add(name=f"{name}_embeddings_add")([token_embedding(token_ids), position_embedding(positions)])
        x = layers.Dropout(dropout, name=f"{name}_embeddings_dropout")(x)  # (batch, seq, hidden)
        blocks = [
            TransformerDecoderBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                activation=activation,
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"{name}_block{i}",
            )
            for i in range(num_layers)
        ]
        for block in blocks:
            x = block(x, padding_mask=padding_mask)
        final_norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, name=f"{name}_final_norm")
        logits = token_embedding(final_norm(x), reverse=True)  # (batch, seq, vocab), tied weights
        # float32 logits even under a mixed-precision policy.
        logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(
            inputs,
            logits,
            arguments=arguments,
            parts=dict(
                token_embedding=token_embedding, position_embedding=position_embedding, blocks=blocks,
                final_norm=final_norm,
            ),
            name=name,
            **kwargs,
        )

    def role_layers(self):
        """LoRA roles: ``qkv`` (also ``query``, ``key``, ``value``: one fused projection),
        ``attention_output``, ``ffn`` (both layers)."""
        qkv = [block.self_attention.qkv for block in self.blocks]
        return {
            "qkv": qkv, "query": qkv, "key": qkv, "value": qkv,
            "attention_output": [block.self_attention.output_dense for block in self.blocks],
            "ffn": [layer for b in self.blocks for layer in (b.ffn_intermediate, b.ffn_output)],
        }


class CachedGPT:
    """Cached decoding over a built ``gpt`` model's own layers (no copy of the weights).

    The cache is ``{"mask", "positions": (batch, max_length), "layers": ((key, value), ...)}`` with
    ``(batch, heads, max_length, head_dim)`` tensors; every leaf has the batch first, so
    beam search can expand and reorder it.
    """

    def __init__(self, model: GPT):
        if not isinstance(model, GPT):
            raise TypeError(f"CachedGPT needs a bigkeras `GPT` model (from `gpt(...)`), got {type(model).__name__}.")
        self.token_embedding = model.token_embedding
        self.position_embedding = model.position_embedding
        self.final_norm = model.final_norm
        self.blocks = list(model.blocks)

    def _embed(self, token_ids, positions):
        return self.token_embedding(token_ids) + self.position_embedding(positions)

    def _logits(self, x):
        return ops.cast(self.token_embedding(self.final_norm(x), reverse=True), "float32")

    def init_cache(self, prompt_ids, prompt_mask, max_length):
        """Run the (left-padded) prompt once; return the cache for ``max_length`` positions."""
        x = self._embed(prompt_ids, position_ids(prompt_mask))
        caches = []
        for block in self.blocks:
            x, cache = block.prefill(x, prompt_mask, max_length)
            caches.append(cache)
        pad = max_length - ops.shape(prompt_mask)[1]
        mask = ops.pad(ops.cast(prompt_mask, "int32"), ((0, 0), (0, pad)), constant_values=1)
        return {"mask": mask, "positions": position_ids(mask), "layers": tuple(caches)}

    def step(self, sequence, index, cache):
        """Logits ``(batch, vocab)`` predicting position ``index + 1`` of ``sequence``.

        Only ``sequence[:, index]`` is run, as ``(batch, hidden)``; earlier positions come
        from the cache.
        """
        x = self._embed(sequence[:, index], cache["positions"][:, index])  # (batch, hidden)
        attend_mask = cache_step_mask(cache["mask"], index)
        caches = []
        for block, layer_cache in zip(self.blocks, cache["layers"]):
            x, layer_cache = block.step(x, layer_cache, attend_mask, index)
            caches.append(layer_cache)
        return self._logits(x), {**cache, "layers": tuple(caches)}


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


register_family("gpt", gpt, PRESETS)
