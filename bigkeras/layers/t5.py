"""T5 layers: RMS norm, relative position bias, unscaled attention and the T5 block.

Raffel et al., 2019, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer" (https://arxiv.org/abs/1910.10683). What differs from ``bigkeras.layers.decoder``:

- ``RMSNorm``: scales by the root mean square, no centering and no bias (epsilon 1e-6);
- ``RelativePositionBias``: a learned bias per head and relative-position bucket, added to
  the attention scores (bidirectional buckets in the encoder, causal in the decoder). Only
  the first block of a stack owns one; the others reuse the bias it computed, as in Hugging
  Face's and keras-hub's T5;
- ``T5Attention``: no biases and no ``1/sqrt(head_dim)`` scaling (T5 folds it into the
  query initialisation); heads may be narrower than ``hidden_dim / num_heads``
  (``key_value_dim``);
- ``T5Block``: pre-norm self-attention, cross-attention (decoder) and a ReLU or gated-GELU
  feed-forward, each with a residual connection.

Attention takes an additive ``bias`` ``(batch or 1, heads, q, k)``: the position bias with
``-1e9`` where the mask hides a key (``attention_bias``), as T5's reference code folds it.
Blocks have a whole-sequence path (``call``) and a one-position path (``step``) over the same
weights, for cached decoding with fixed-shape caches in one ``tf.while_loop``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers import activations
from bigkeras.layers.decoder import causal_mask, write_position

MASKED = -1e9  # added where a key is hidden; finite so an all-masked row is not NaN


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
    """T5's bucket of each relative position ``key - query`` (Mesh TensorFlow's scheme).

    Half of the buckets (of each direction, when bidirectional) hold exact distances; the rest
    grow logarithmically up to ``max_distance``; farther distances share the last bucket. A
    causal (``bidirectional=False``) stack buckets only the past: future keys get bucket 0.

    Args:
        relative_position: int tensor, ``key_position - query_position``.
        bidirectional: bool, separate buckets for keys after the query (the encoder).
        num_buckets: int. Default 32.
        max_distance: int. Default 128.

    Returns:
        int32 tensor of the same shape, values in ``[0, num_buckets)``.

    Example:
        >>> relative_position_bucket(ops.arange(-3, 4), bidirectional=True)
        [3, 2, 1, 0, 17, 18, 19]
    """
    relative_position = ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(ops.greater(relative_position, 0), "int32") * num_buckets
        distance = ops.abs(relative_position)
    else:
        distance = -ops.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = ops.less(distance, max_exact)
    # As Hugging Face computes it, in float32, truncated; log(0) is never selected (is_small).
    scaled = (
        ops.log(ops.cast(ops.maximum(distance, 1), "float32") / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    large = ops.minimum(max_exact + ops.cast(scaled, "int32"), num_buckets - 1)
    return buckets + ops.where(is_small, distance, large)


def attention_bias(mask, position_bias=None):
    """Additive attention bias: ``position_bias`` (or 0) where ``mask`` is true, -1e9 elsewhere.

    Args:
        mask: bool, broadcastable to ``(batch, heads, q, k)``.
        position_bias: optional float ``(1, heads, q, k)``.
    """
    hidden = ops.where(mask, 0.0, MASKED)
    return hidden if position_bias is None else ops.cast(position_bias, "float32") + hidden


def padding_mask_4d(padding_mask):
    """Bool ``(batch, 1, 1, k)`` from a ``(batch, k)`` padding mask: which keys are real."""
    return ops.cast(padding_mask, "bool")[:, None, None, :]


@keras.saving.register_keras_serializable(package="bigkeras")
class RMSNorm(layers.Layer):
    """Root-mean-square layer norm without centering or bias (T5's ``T5LayerNorm``).

    Zhang and Sennrich, 2019 (https://arxiv.org/abs/1910.07467):
    ``y = scale * x / sqrt(mean(x^2) + epsilon)``, computed in float32.

    Args:
        epsilon: float. Default 1e-6.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> RMSNorm()(np.ones((2, 3, 8), "float32")).shape
        (2, 3, 8)
    """

    def __init__(self, *, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = checks.positive_number("epsilon", epsilon)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.built = True

    def call(self, x):
        x32 = ops.cast(x, "float32")
        variance = ops.mean(ops.square(x32), axis=-1, keepdims=True)
        normed = ops.cast(x32 * ops.rsqrt(variance + self.epsilon), self.compute_dtype)
        return ops.cast(self.scale, self.compute_dtype) * normed

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="bigkeras")
class RelativePositionBias(layers.Layer):
    """A learned attention bias per head and relative-position bucket.

    Args:
        num_heads: int, the attention heads.
        bidirectional: bool, True in the encoder, False (causal buckets) in the decoder.
        num_buckets: int. Default 32.
        max_distance: int. Default 128.
        hidden_dim: int, the model width, which sets the initial scale
            (``RandomNormal(hidden_dim ** -0.5)``, as Hugging Face initialises it).
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call: ``bias(queries, keys)`` with ``(batch, q, ...)`` and ``(batch, k, ...)`` tensors
    (only their lengths are read) returns float32 ``(1, heads, q, k)``; ``bias.row(index,
    key_length)`` returns the ``(1, heads, 1, key_length)`` bias of the one query at ``index``.
    """

    def __init__(self, *, num_heads: int, hidden_dim: int, bidirectional: bool, num_buckets: int = 32,
                 max_distance: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = checks.positive_int("num_heads", num_heads)
        self.hidden_dim = checks.positive_int("hidden_dim", hidden_dim)
        self.bidirectional = bool(bidirectional)
        self.num_buckets = checks.positive_int("num_buckets", num_buckets)
        self.max_distance = checks.positive_int("max_distance", max_distance)

    def build(self, *args, **kwargs):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, self.num_heads),
            initializer=keras.initializers.RandomNormal(stddev=self.hidden_dim**-0.5),
        )
        self.built = True

    def bias(self, query_positions, key_positions):
        """``(1, heads, q, k)`` float32 for int ``query_positions`` (q,) and ``key_positions`` (k,)."""
        relative = key_positions[None, :] - query_positions[:, None]  # (q, k)
        buckets = relative_position_bucket(
            relative, bidirectional=self.bidirectional, num_buckets=self.num_buckets, max_distance=self.max_distance
        )
        values = ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)  # (q, k, heads)
        return ops.transpose(values, (2, 0, 1))[None]

    def row(self, index, key_length):
        """The bias ``(1, heads, 1, key_length)`` of the query at position ``index``."""
        return self.bias(ops.reshape(ops.cast(index, "int32"), (1,)), ops.arange(key_length, dtype="int32"))

    def call(self, queries, keys):
        q, k = ops.shape(queries)[1], ops.shape(keys)[1]
        return self.bias(ops.arange(q, dtype="int32"), ops.arange(k, dtype="int32"))

    def compute_output_spec(self, queries, keys):
        return keras.KerasTensor((1, self.num_heads, queries.shape[1], keys.shape[1]), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, hidden_dim=self.hidden_dim, bidirectional=self.bidirectional,
                      num_buckets=self.num_buckets, max_distance=self.max_distance)
        return config


@keras.saving.register_keras_serializable(package="bigkeras")
class T5Attention(layers.Layer):
    """T5 multi-head attention: no biases, no score scaling, an additive bias.

    Args:
        hidden_dim: int, the input and output width.
        num_heads: int, the attention heads.
        key_value_dim: int, the width of each head (``num_heads * key_value_dim`` need not be
            ``hidden_dim``: T5 1.1 small has 6 heads of 64 in a 512-wide model).
        dropout: float in [0, 1), on the attention probabilities. Default 0.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Parts: ``query_dense``, ``key_dense``, ``value_dense``, ``output_dense`` (bias-free Dense).

    Example:
        >>> attention = T5Attention(hidden_dim=32, num_heads=2, key_value_dim=16)
        >>> attention(np.zeros((2, 5, 32), "float32"), np.zeros((1, 2, 5, 5), "float32")).shape
        (2, 5, 32)
    """

    def __init__(self, *, hidden_dim: int, num_heads: int, key_value_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = checks.positive_int("hidden_dim", hidden_dim)
        self.num_heads = checks.positive_int("num_heads", num_heads)
        self.key_value_dim = checks.positive_int("key_value_dim", key_value_dim)
        self.dropout = checks.fraction("dropout", dropout)
        inner = num_heads * key_value_dim
        # Hugging Face's initialisation: T5 folds 1/sqrt(head_dim) into the query's scale.
        self.query_dense = self._dense(inner, (hidden_dim * key_value_dim) ** -0.5, "query")
        self.key_dense = self._dense(inner, hidden_dim**-0.5, "key")
        self.value_dense = self._dense(inner, hidden_dim**-0.5, "value")
        self.output_dense = self._dense(hidden_dim, inner**-0.5, "output")
        self.probs_dropout = layers.Dropout(dropout, name="probs_dropout", dtype=self.dtype_policy)

    def _dense(self, units, stddev, name):
        return layers.Dense(units, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(stddev=stddev),
                            name=name, dtype=self.dtype_policy)

    def build(self, input_shape, *args, **kwargs):
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.num_heads * self.key_value_dim))
        self.built = True

    def _heads(self, x):
        # (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, self.key_value_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def project_context(self, context):
        """Keys and values of ``context`` (batch, k, hidden): two (batch, heads, k, head_dim)."""
        return self._heads(self.key_dense(context)), self._heads(self.value_dense(context))

    def attend(self, x, key_value, bias, training=None):
        """Attend from ``x`` (batch, q, hidden) to projected ``(key, value)`` under ``bias``."""
        query = self._heads(self.query_dense(x))
        # float32 scores and bias (Keras casts a float layer input such as `bias` to the compute dtype)
        scores = ops.cast(ops.matmul(query, ops.swapaxes(key_value[0], -1, -2)), "float32") + ops.cast(bias, "float32")
        probs = self.probs_dropout(ops.cast(ops.softmax(scores, axis=-1), key_value[1].dtype), training=training)
        out = ops.transpose(ops.matmul(probs, key_value[1]), (0, 2, 1, 3))  # (batch, q, heads, head_dim)
        out = ops.reshape(out, (ops.shape(out)[0], ops.shape(out)[1], self.num_heads * self.key_value_dim))
        return self.output_dense(out)

    def call(self, x, bias, context=None, training=None):
        """Attend from ``x`` to ``context`` (default ``x``); ``bias`` (batch or 1, heads, q, k)."""
        return self.attend(x, self.project_context(x if context is None else context), bias, training)

    def step(self, x, key_value, bias, index=None):
        """One query ``x`` (batch, hidden) -> (output (batch, hidden), (key, value)).

        With ``index``, ``x``'s own key and value are first written into the self-attention
        cache ``key_value`` (each ``(batch, heads, cache_length, head_dim)``) at ``index``;
        without, ``key_value`` is a fixed (cross-attention) context.
        """
        split = lambda t: tf.reshape(t, (-1, self.num_heads, 1, self.key_value_dim))  # noqa: E731
        if index is not None:
            key_value = (write_position(key_value[0], split(self.key_dense(x)), index),
                         write_position(key_value[1], split(self.value_dense(x)), index))
        query = split(self.query_dense(x))
        scores = tf.cast(tf.matmul(query, key_value[0], transpose_b=True), tf.float32) + tf.cast(bias, tf.float32)
        probs = tf.cast(tf.nn.softmax(scores), key_value[1].dtype)
        out = tf.reshape(tf.matmul(probs, key_value[1]), (-1, self.num_heads * self.key_value_dim))
        return self.output_dense(out), key_value

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads, key_value_dim=self.key_value_dim,
                      dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="bigkeras")
class T5Block(layers.Layer):
    """One T5 encoder or decoder block (pre-norm, residual, bias-free).

    Args:
        hidden_dim: int, the model width.
        num_heads: int, the attention heads.
        key_value_dim: int, the width of each head.
        intermediate_dim: int, the feed-forward width.
        dropout: float in [0, 1). Default 0.
        activation: str, the feed-forward activation: ``"relu"`` (T5 1.0) or
            ``"gelu_approximate"`` (T5 1.1, Hugging Face's ``gelu_new``). Default ``"relu"``.
        use_gated_activation: bool, ``act(x W0) * (x W1)`` then ``W_out`` (T5 1.1's gated
            GELU) instead of ``act(x W_in) W_out``. Default False.
        layer_norm_epsilon: float. Default 1e-6.
        is_decoder: bool, a causal block with cross-attention to the encoder. Default False.
        relative_attention_bias: bool, whether this block owns the stack's
            ``RelativePositionBias`` (the first block of a stack). Default False.
        num_buckets, max_distance: int, the relative-position buckets. Defaults 32 and 128.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Parts: ``self_attention``, ``self_attention_norm``, ``position_bias`` (or None),
    ``cross_attention`` and ``cross_attention_norm`` (decoder, else None), ``ffn_norm``,
    ``ffn_intermediate`` (``wi``/``wi_0``), ``ffn_gate`` (``wi_1``, or None), ``ffn_output``.

    Call: ``block(x, bias=None, padding_mask=None, context=None, context_mask=None)`` ->
    ``(x, bias)``: the first block of a stack computes the additive self-attention bias
    (relative positions and mask) and every later block reuses it.
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_heads: int,
        key_value_dim: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        use_gated_activation: bool = False,
        layer_norm_epsilon: float = 1e-6,
        is_decoder: bool = False,
        relative_attention_bias: bool = False,
        num_buckets: int = 32,
        max_distance: int = 128,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = checks.positive_int("hidden_dim", hidden_dim)
        self.num_heads = checks.positive_int("num_heads", num_heads)
        self.key_value_dim = checks.positive_int("key_value_dim", key_value_dim)
        self.intermediate_dim = checks.positive_int("intermediate_dim", intermediate_dim)
        self.dropout = checks.fraction("dropout", dropout)
        self.activation = activation
        self.use_gated_activation = bool(use_gated_activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.is_decoder = bool(is_decoder)
        self.relative_attention_bias = bool(relative_attention_bias)
        self.num_buckets, self.max_distance = num_buckets, max_distance

        policy = self.dtype_policy
        heads = dict(hidden_dim=hidden_dim, num_heads=num_heads, key_value_dim=key_value_dim, dropout=dropout,
                     dtype=policy)
        norm = lambda name: RMSNorm(epsilon=layer_norm_epsilon, name=name, dtype=policy)  # noqa: E731
        self.self_attention = T5Attention(**heads, name="self_attention")
        self.self_attention_norm = norm("self_attention_norm")
        self.position_bias = None
        if self.relative_attention_bias:
            self.position_bias = RelativePositionBias(
                num_heads=num_heads, hidden_dim=hidden_dim, bidirectional=not is_decoder, num_buckets=num_buckets,
                max_distance=max_distance, name="relative_attention_bias", dtype=policy,
            )
        self.cross_attention = T5Attention(**heads, name="cross_attention") if is_decoder else None
        self.cross_attention_norm = norm("cross_attention_norm") if is_decoder else None
        self.ffn_norm = norm("ffn_norm")

        def dense(units, stddev, name, activation=None):
            return layers.Dense(units, use_bias=False, activation=activation, name=name, dtype=policy,
                                kernel_initializer=keras.initializers.RandomNormal(stddev=stddev))

        self.ffn_intermediate = dense(intermediate_dim, hidden_dim**-0.5, "ffn_intermediate",
                                      activations.get(activation))
        self.ffn_gate = dense(intermediate_dim, hidden_dim**-0.5, "ffn_gate") if self.use_gated_activation else None
        self.ffn_output = dense(hidden_dim, intermediate_dim**-0.5, "ffn_output")
        self.dropout_layer = layers.Dropout(dropout, name="dropout", dtype=policy)

    def build(self, input_shape, *args, **kwargs):
        for layer in (self.self_attention, self.self_attention_norm, self.ffn_norm, self.ffn_intermediate):
            layer.build(input_shape)
        if self.position_bias is not None:
            self.position_bias.build()
        if self.is_decoder:
            self.cross_attention.build(input_shape)
            self.cross_attention_norm.build(input_shape)
        if self.ffn_gate is not None:
            self.ffn_gate.build(input_shape)
        self.ffn_output.build((*input_shape[:-1], self.intermediate_dim))
        self.built = True

    def _feed_forward(self, x, training):
        h = self.ffn_norm(x)
        inner = self.ffn_intermediate(h)
        if self.ffn_gate is not None:
            inner = inner * self.ffn_gate(h)
        out = self.ffn_output(self.dropout_layer(inner, training=training))
        return x + self.dropout_layer(out, training=training)

    def self_attention_bias(self, x, padding_mask):
        """The stack's additive self-attention bias ``(batch, heads, seq, seq)`` (first block only).

        The relative position bias with ``-1e9`` where ``padding_mask`` (batch, seq) hides a
        key (and, in the decoder, where the key is in the future).
        """
        if self.position_bias is None:
            raise ValueError(f"{self.name} does not own the stack's relative position bias: pass `bias`.")
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], "int32")
        mask = causal_mask(padding_mask) if self.is_decoder else padding_mask_4d(padding_mask)
        return attention_bias(mask, self.position_bias(x, x))

    def call(self, x, bias=None, padding_mask=None, context=None, context_mask=None, training=None):
        """Apply the block to the whole sequence ``x`` (batch, seq, hidden).

        Args:
            bias: the stack's additive self-attention bias, returned by its first block; the
                first block computes it (``bias=None``) from ``padding_mask``.
            padding_mask: ``(batch, seq)``, 1 for real tokens; read when ``bias`` is None.
            context: ``(batch, ctx, hidden)`` encoder outputs (decoder blocks).
            context_mask: ``(batch, ctx)``, 1 for real context positions.

        Returns:
            ``(output like x, bias)``: the next blocks of the stack reuse ``bias``.
        """
        if bias is None:
            bias = self.self_attention_bias(x, padding_mask)
        h = self.self_attention(self.self_attention_norm(x), bias, training=training)
        x = x + self.dropout_layer(h, training=training)
        if self.is_decoder:
            if context is None:
                raise ValueError(f"{self.name} is a decoder block: pass the encoder outputs as `context`.")
            if context_mask is None:
                context_mask = ops.ones(ops.shape(context)[:2], "int32")
            context_bias = attention_bias(padding_mask_4d(context_mask))
            h = self.cross_attention(self.cross_attention_norm(x), context_bias, context=context, training=training)
            x = x + self.dropout_layer(h, training=training)
        return self._feed_forward(x, training), bias

    def step(self, x, cache, bias, index, context_kv, context_bias):
        """Decode one position ``x`` (batch, hidden) at ``index``; return (output, cache).

        ``cache`` is this block's self-attention ``(key, value)``; ``context_kv`` the
        cross-attention's projected encoder outputs (``cross_attention.project_context``).
        """
        h, cache = self.self_attention.step(self.self_attention_norm(x), cache, bias, index)
        x = x + h
        h, _ = self.cross_attention.step(self.cross_attention_norm(x), context_kv, context_bias)
        return self._feed_forward(x + h, False), cache

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim, num_heads=self.num_heads, key_value_dim=self.key_value_dim,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout, activation=self.activation,
            use_gated_activation=self.use_gated_activation, layer_norm_epsilon=self.layer_norm_epsilon,
            is_decoder=self.is_decoder, relative_attention_bias=self.relative_attention_bias,
            num_buckets=self.num_buckets, max_distance=self.max_distance,
        )
        return config
