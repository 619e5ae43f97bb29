"""Transformer building blocks shared by the encoder classifier, BERT, GPT and seq2seq.

Three layers, each registered for ``.keras`` loading without ``custom_objects`` and each
with a ``get_config()`` that returns exactly its constructor arguments:

- ``TokenAndPositionEmbedding``: token embedding plus a learned position embedding.
- ``TransformerEncoderBlock``: self-attention and a feed-forward network, each with a
  residual connection and layer normalisation, pre-norm or post-norm.
- ``MaskedMeanPooling``: the mean over the real (unpadded) positions of a sequence.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers import activations


@keras.saving.register_keras_serializable(package="bigkeras")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Sum of a token embedding and a learned absolute position embedding.

    As in BERT and GPT-2 (Devlin et al., 2018, https://arxiv.org/abs/1810.04805; Radford
    et al., 2019). Position ``i`` of the input gets position embedding ``start_index + i``,
    so inputs may be shorter than ``sequence_length`` (and cached decoding can feed one
    token at a time).

    Args:
        vocab_size: int, the number of token ids.
        sequence_length: int, the longest sequence (rows of the position table).
        hidden_dim: int, the embedding width.
        embeddings_initializer: initializer name or object for both tables.
            Default ``"glorot_uniform"``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Attributes:
        token_embedding: the ``keras.layers.Embedding`` of token ids; its ``embeddings``
            can be tied to an output projection (``token_embedding.embeddings``).
        position_embedding: the ``keras.layers.Embedding`` of positions.

    Example:
        >>> embed = TokenAndPositionEmbedding(vocab_size=100, sequence_length=16, hidden_dim=32)
        >>> embed(np.zeros((2, 16), "int32")).shape
        (2, 16, 32)
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        sequence_length: int,
        hidden_dim: int,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = checks.positive_int("vocab_size", vocab_size)
        self.sequence_length = checks.positive_int("sequence_length", sequence_length)
        self.hidden_dim = checks.positive_int("hidden_dim", hidden_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.token_embedding = layers.Embedding(
            vocab_size,
            hidden_dim,
            embeddings_initializer=_clone(self.embeddings_initializer),
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self.position_embedding = layers.Embedding(
            sequence_length,
            hidden_dim,
            embeddings_initializer=_clone(self.embeddings_initializer),
            dtype=self.dtype_policy,
            name="position_embedding",
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding.build((None,))
        self.built = True

    def call(self, token_ids, start_index=0):
        """Embed ``token_ids`` (batch, seq) into (batch, seq, hidden_dim).

        Args:
            token_ids: int tensor of shape ``(batch, seq)`` with ``seq <= sequence_length``.
            start_index: int or scalar tensor, the position of the first token (for cached
                decoding). Default 0.
        """
        length = token_ids.shape[-1]  # None when only known at run time
        static = isinstance(length, int) and isinstance(start_index, int)
        if static and start_index + length > self.sequence_length:
            raise ValueError(
                f"`token_ids` of length {length} from `start_index` {start_index} do not fit the "
                f"position table: `sequence_length` is {self.sequence_length}."
            )
        positions = ops.arange(ops.shape(token_ids)[-1], dtype="int32") + ops.cast(start_index, "int32")
        # (batch, seq, hidden) + (1, seq, hidden)
        return self.token_embedding(token_ids) + ops.expand_dims(self.position_embedding(positions), 0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            sequence_length=self.sequence_length,
            hidden_dim=self.hidden_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


def check_heads(hidden_dim, num_heads):
    """Validate an attention shape: positive ints, ``hidden_dim`` divisible by ``num_heads``."""
    checks.positive_int("hidden_dim", hidden_dim)
    checks.positive_int("num_heads", num_heads)
    if hidden_dim % num_heads:
        raise ValueError(
            f"`hidden_dim` must be divisible by `num_heads`, got hidden_dim={hidden_dim} "
            f"and num_heads={num_heads}."
        )


class ResidualBlock(keras.layers.Layer):
    """What the encoder and decoder blocks share: their arguments, the feed-forward network,
    the pre-norm or post-norm residual wiring, and the config.

    Subclasses make their attention sub-layers in ``_make_attention`` (called before the
    feed-forward layers are made, so weights list attention first, as keras-hub's do) and
    apply them with ``_residual``, then ``_feed_forward``. The arguments are
    ``TransformerEncoderBlock``'s.
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
        layer_norm_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_heads(hidden_dim, num_heads)
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.intermediate_dim = checks.positive_int("intermediate_dim", intermediate_dim)
        self.dropout = checks.fraction("dropout", dropout)
        self.activation = keras.activations.serialize(activations.get(activation))
        self.norm_first = bool(norm_first)
        checks.positive_number("layer_norm_epsilon", layer_norm_epsilon)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        self._make_attention()
        self.ffn_intermediate = self._sublayer(
            layers.Dense, "ffn_intermediate", intermediate_dim, activation=activations.get(activation)
        )
        self.ffn_output = self._sublayer(layers.Dense, "ffn_output", hidden_dim)
        self.ffn_norm = self._norm("ffn_norm")
        self.ffn_dropout = self._dropout("ffn_dropout")

    def _make_attention(self):
        raise NotImplementedError

    def _sublayer(self, layer_class, name, *args, **kwargs):
        """A sub-layer with this block's dtype policy."""
        return layer_class(*args, name=name, dtype=self.dtype_policy, **kwargs)

    def _norm(self, name):
        return self._sublayer(layers.LayerNormalization, name, epsilon=self.layer_norm_epsilon)

    def _dropout(self, name):
        return self._sublayer(layers.Dropout, name, self.dropout)

    def build(self, input_shape):
        if input_shape[-1] != self.hidden_dim:
            raise ValueError(
                f"The inputs' last axis must equal `hidden_dim`={self.hidden_dim}, "
                f"got inputs of shape {tuple(input_shape)}."
            )
        self.ffn_intermediate.build(input_shape)
        self.ffn_output.build((*input_shape[:-1], self.intermediate_dim))
        self.ffn_norm.build(input_shape)
        self.built = True

    def _residual(self, x, sublayer, norm, dropout, training):
        # Pre-norm: x + f(norm(x)); post-norm: norm(x + f(x)).
        y = sublayer(norm(x) if self.norm_first else x)
        y = dropout(y, training=training) + x
        return y if self.norm_first else norm(y)

    def _feed_forward(self, x, training):
        ffn = lambda h: self.ffn_output(self.ffn_intermediate(h))  # noqa: E731
        return self._residual(x, ffn, self.ffn_norm, self.ffn_dropout, training)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            activation=self.activation,
            norm_first=self.norm_first,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="bigkeras")
class TransformerEncoderBlock(ResidualBlock):
    """One Transformer encoder block: self-attention, then a feed-forward network.

    Vaswani et al., 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762).
    Each sub-block adds its input back (residual). With ``norm_first=True`` (pre-norm, as in
    GPT-2 and ViT) the input of each sub-block is normalised, which trains stably without
    warm-up; a model stacking pre-norm blocks should end with its own ``LayerNormalization``.
    With ``norm_first=False`` (post-norm, as in the paper and BERT) the residual sum is
    normalised. Parameter count matches ``keras_hub.layers.TransformerEncoder``.

    Args:
        hidden_dim: int, the width of the inputs and outputs; divisible by ``num_heads``.
        num_heads: int, the attention heads; each has ``hidden_dim // num_heads`` dims.
        intermediate_dim: int, the hidden width of the feed-forward network.
        dropout: float in [0, 1), on attention probabilities and on each sub-block's
            output before the residual sum. Default 0.
        activation: str, the feed-forward activation: a Keras name (``"gelu"`` is the exact,
            erf GELU) or ``"gelu_approximate"`` (tanh, GPT-2's). Default ``"gelu"``.
        norm_first: bool, pre-norm (True, default) or post-norm (False).
        layer_norm_epsilon: float, the layer-normalisation epsilon. Default 1e-5.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).

    Example:
        >>> block = TransformerEncoderBlock(hidden_dim=64, num_heads=4, intermediate_dim=256)
        >>> x = np.random.rand(2, 10, 64).astype("float32")
        >>> block(x, padding_mask=np.ones((2, 10), bool)).shape
        (2, 10, 64)
    """

    def _make_attention(self):
        self.supports_masking = True
        self.attention = self._sublayer(
            layers.MultiHeadAttention, "self_attention", self.num_heads, self.hidden_dim // self.num_heads,
            dropout=self.dropout,
        )
        self.attention_dropout = self._dropout("self_attention_dropout")
        self.attention_norm = self._norm("self_attention_norm")

    def build(self, input_shape):
        super().build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)

    def call(self, x, padding_mask=None, training=None):
        """Apply the block to ``x`` of shape (batch, seq, hidden_dim).

        Args:
            x: float tensor ``(batch, seq, hidden_dim)``.
            padding_mask: optional bool or int tensor ``(batch, seq)``, 1/True for real
                tokens. Padded positions are never attended to, so the outputs at real
                positions do not depend on how much padding follows.
            training: bool, whether dropout is active.

        Returns:
            A tensor shaped like ``x``.
        """
        attention_mask = None
        if padding_mask is not None:
            # (batch, 1, seq): every query may attend to every real key.
            attention_mask = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)
        attend = lambda h: self.attention(h, h, attention_mask=attention_mask, training=training)  # noqa: E731
        x = self._residual(x, attend, self.attention_norm, self.attention_dropout, training)
        return self._feed_forward(x, training)


@keras.saving.register_keras_serializable(package="bigkeras")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the real positions of a sequence: (batch, seq, dim) -> (batch, dim).

    Unlike ``keras.layers.GlobalAveragePooling1D`` with a mask, a sequence with no real
    token (an empty text) pools to zeros instead of NaN (0 / 0).

    Example:
        >>> MaskedMeanPooling()(x, padding_mask=token_ids != 0)
    """

    def call(self, x, padding_mask=None):
        """Average ``x`` over the positions where ``padding_mask`` (batch, seq) is true."""
        if padding_mask is None:
            return ops.mean(x, axis=1)
        mask = ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)  # (batch, seq, 1)
        count = ops.maximum(ops.sum(mask, axis=1), ops.cast(1, x.dtype))  # (batch, 1)
        return ops.sum(x * mask, axis=1) / count

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def _clone(initializer):
    # A fresh copy per table: one unseeded initializer object reused would fill both
    # tables with the same values.
    return initializer.__class__.from_config(initializer.get_config())
