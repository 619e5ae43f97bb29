"""Transformer decoder layers with a key/value cache, shared by GPT and the seq2seq model.

Vaswani et al., 2017, "Attention Is All You Need" (https://arxiv.org/abs/1706.03762).

Each attention layer has two paths over the *same* weights:

- ``call``: the whole sequence at once (training, scoring, the functional model);
- ``prefill`` / ``step``: cached decoding. ``prefill`` runs a prompt and returns its keys and
  values padded into fixed-length cache tensors ``(batch, heads, cache_length, head_dim)``;
  ``step`` runs one new position ``(batch, hidden)``, writes its key and value into the cache
  at ``index`` and attends over the cache. Fixed shapes let the whole decode loop live in one
  ``tf.while_loop``.

``step`` runs once per generated token and layer, where per-op costs, not the arithmetic,
bound the speed on a CPU. So it is written in TF ops on 2-D inputs: a Dense on
``(batch, 1, hidden)`` adds a tensordot's shape ops, a head split on one position is a
reshape, keys are read with ``transpose_b``, and outside XLA the cache is written with TF's
native strided-slice update (``XlaDynamicUpdateSlice``, which ``ops.slice_update`` emits, runs
through on-demand XLA outside a compiled function and cost 4x as much here); see
``compiled_cache_writes``.

Positions come from the padding mask (``position_ids``), so a left-padded prompt gets the
same positions, and the same outputs, as the unpadded prompt.
"""

from __future__ import annotations

import contextlib
import math
import threading

import keras
import tensorflow as tf
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers.transformer import ResidualBlock, check_heads

_MASKED = -1e9  # added to masked attention scores; finite so an all-masked row is not NaN


def position_ids(padding_mask):
    """Positions that skip padding: ``max(cumsum(mask) - 1, 0)``, shape ``(batch, seq)``.

    Example:
        >>> position_ids([[0, 0, 1, 1, 1]])  # a left-padded prompt starts at position 0
        [[0, 0, 0, 1, 2]]
    """
    mask = ops.cast(padding_mask, "int32")
    return ops.maximum(ops.cumsum(mask, axis=-1) - 1, 0)


def causal_mask(padding_mask):
    """Bool mask ``(batch, 1, seq, seq)``: query ``i`` sees real keys ``j <= i``."""
    seq = ops.shape(padding_mask)[-1]
    rows = ops.expand_dims(ops.arange(seq), 1)
    cols = ops.expand_dims(ops.arange(seq), 0)
    causal = ops.greater_equal(rows, cols)  # (seq, seq)
    keys = ops.cast(padding_mask, "bool")[:, None, None, :]  # (batch, 1, 1, seq)
    return ops.logical_and(causal[None, None], keys)


def cache_step_mask(cache_mask, index):
    """Bool mask ``(batch, 1, 1, cache_length)`` for the query at cache position ``index``.

    Args:
        cache_mask: ``(batch, cache_length)``, 1 for real positions (prompt padding is 0).
        index: scalar int tensor, the position being decoded.
    """
    length = ops.shape(cache_mask)[-1]
    seen = ops.less_equal(ops.arange(length), index)  # (cache_length,)
    return ops.logical_and(ops.cast(cache_mask, "bool"), seen[None])[:, None, None, :]


def _attend(query, key, value, mask, dropout, training):
    """Scaled dot-product attention over heads.

    Args:
        query: ``(batch, heads, q, head_dim)``; key, value: ``(batch, heads, k, head_dim)``.
        mask: bool, broadcastable to ``(batch, heads, q, k)``, or None.

    Returns:
        ``(batch, q, heads * head_dim)``.
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2)) * scale  # (batch, heads, q, k)
    scores = ops.cast(scores, "float32")  # softmax in float32 under mixed precision
    if mask is not None:
        scores = ops.where(mask, scores, _MASKED)
    probs = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
    probs = dropout(probs, training=training)
    out = ops.matmul(probs, value)  # (batch, heads, q, head_dim)
    return _merge_heads(out)


_WRITES = threading.local()


@contextlib.contextmanager
def compiled_cache_writes(compiled: bool = True):
    """Trace ``write_position`` for XLA (``compiled=True``) or for TF's executor.

    XLA needs ``XlaDynamicUpdateSlice`` (it updates the buffer in place) and rejects a
    strided-slice update with a tensor ``begin``; TF's executor runs the strided-slice update
    natively. Enter this while tracing a ``jit_compile=True`` function.
    """
    previous = getattr(_WRITES, "compiled", False)
    _WRITES.compiled = compiled
    try:
        yield
    finally:
        _WRITES.compiled = previous


def write_position(cache, update, index):
    """``cache`` (batch, heads, length, head_dim) with ``update`` (batch, heads, 1, head_dim) at ``index``."""
    if getattr(_WRITES, "compiled", False):
        return ops.slice_update(cache, [0, 0, index, 0], update)
    begin = tf.stack([0, 0, index, 0])
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=cache, begin=begin, end=begin + [0, 0, 1, 0], strides=[1, 1, 1, 1],
        begin_mask=0b1011, end_mask=0b1011, value=update,  # whole batch, heads and head_dim
    )


def _attend_one(query, key, value, mask):
    """``_attend`` for one query position: ``query`` (batch, heads, 1, head_dim) -> (batch, hidden)."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    scores = tf.cast(tf.matmul(query, key, transpose_b=True) * scale, tf.float32)
    probs = tf.nn.softmax(tf.where(mask, scores, _MASKED))
    out = tf.matmul(tf.cast(probs, value.dtype), value)  # (batch, heads, 1, head_dim)
    return tf.reshape(out, (-1, query.shape[1] * query.shape[3]))


def _one_position_heads(x, num_heads):
    # (batch, heads * head_dim) -> (batch, heads, 1, head_dim)
    return tf.reshape(x, (-1, num_heads, 1, x.shape[-1] // num_heads))


def _split_heads(x, num_heads):
    # (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
    head_dim = x.shape[-1] // num_heads
    x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], num_heads, head_dim))
    return ops.transpose(x, (0, 2, 1, 3))


def _merge_heads(x):
    # (batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim)
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], x.shape[2] * x.shape[3]))


def _pad_to(x, length):
    # (batch, heads, seq, head_dim) -> (batch, heads, length, head_dim), zeros after seq.
    return ops.pad(x, ((0, 0), (0, 0), (0, length - ops.shape(x)[2]), (0, 0)))


class _Attention(layers.Layer):
    """What both attention layers share: arguments, output projection, dropout, config.

    Subclasses make their input projections in ``_make_projections``, called first so the
    weights list them before the output projection.
    """

    def __init__(self, *, hidden_dim: int, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        check_heads(hidden_dim, num_heads)
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.dropout = checks.fraction("dropout", dropout)
        self._make_projections()
        self.output_dense = self._dense(hidden_dim, "output")
        self.probs_dropout = layers.Dropout(dropout, name="probs_dropout", dtype=self.dtype_policy)

    def _make_projections(self):
        raise NotImplementedError

    def _dense(self, units, name):
        return layers.Dense(units, name=name, dtype=self.dtype_policy)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, num_heads=self.num_heads, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="bigkeras")
class CausalSelfAttention(_Attention):
    """Multi-head causal self-attention with a fused query/key/value projection.

    One ``(hidden, 3 * hidden)`` matmul instead of three: the same parameter count as
    ``keras.layers.MultiHeadAttention`` (and GPT-2), fewer ops per decoded token.

    Args:
        hidden_dim: int, the input and output width; divisible by ``num_heads``.
        num_heads: int, the attention heads.
        dropout: float in [0, 1), on the attention probabilities. Default 0.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> attention = CausalSelfAttention(hidden_dim=64, num_heads=4)
        >>> attention(np.zeros((2, 10, 64), "float32")).shape
        (2, 10, 64)
    """

    def _make_projections(self):
        self.qkv = self._dense(3 * self.hidden_dim, "qkv")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.output_dense.build(input_shape)
        self.built = True

    def _project(self, x):
        q, k, v = ops.split(self.qkv(x), 3, axis=-1)
        return (_split_heads(t, self.num_heads) for t in (q, k, v))

    def prefill(self, x, mask, cache_length=None, training=None):
        """Attend under the bool ``mask`` (batch, 1, q, k); also return ``(key, value)``.

        With ``cache_length``, key and value are zero-padded to that many positions.
        """
        q, k, v = self._project(x)
        out = self.output_dense(_attend(q, k, v, mask, self.probs_dropout, training))
        if cache_length is not None:
            k, v = _pad_to(k, cache_length), _pad_to(v, cache_length)
        return out, (k, v)

    def call(self, x, padding_mask=None, training=None):
        """Causal attention over ``x`` (batch, seq, hidden); ``padding_mask`` (batch, seq)."""
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], "int32")
        return self.prefill(x, causal_mask(padding_mask), training=training)[0]

    def step(self, x, cache, mask, index):
        """Decode one position.

        Args:
            x: ``(batch, hidden)``, the input at cache position ``index``.
            cache: ``(key, value)``, each ``(batch, heads, cache_length, head_dim)``.
            mask: bool ``(batch, 1, 1, cache_length)`` (see ``cache_step_mask``).
            index: scalar int tensor.

        Returns:
            ``(output (batch, hidden), updated cache)``.
        """
        q, k, v = (_one_position_heads(t, self.num_heads) for t in tf.split(self.qkv(x), 3, axis=-1))
        key, value = write_position(cache[0], k, index), write_position(cache[1], v, index)
        return self.output_dense(_attend_one(q, key, value, mask)), (key, value)


@keras.saving.register_keras_serializable(package="bigkeras")
class CrossAttention(_Attention):
    """Multi-head attention from decoder positions to an encoder's outputs (the context).

    The context's keys and values are projected once per sequence (``project_context``) and
    reused at every decoded position.

    Args:
        hidden_dim: int, the query, context and output width; divisible by ``num_heads``.
        num_heads: int, the attention heads.
        dropout: float in [0, 1), on the attention probabilities. Default 0.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> cross = CrossAttention(hidden_dim=64, num_heads=4)
        >>> cross(np.zeros((2, 5, 64), "float32"), np.zeros((2, 9, 64), "float32")).shape
        (2, 5, 64)
    """

    def _make_projections(self):
        self.query = self._dense(self.hidden_dim, "query")
        self.key_value = self._dense(2 * self.hidden_dim, "key_value")

    def build(self, input_shape):
        # The context has the same width as the queries (``hidden_dim``).
        self.query.build(input_shape)
        self.key_value.build(input_shape)
        self.output_dense.build(input_shape)
        self.built = True

    def project_context(self, context):
        """Keys and values of ``context`` (batch, ctx, hidden): two (batch, heads, ctx, head_dim)."""
        k, v = ops.split(self.key_value(context), 2, axis=-1)
        return _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)

    def attend(self, x, context_kv, context_mask=None, training=None):
        """Attend from ``x`` (batch, q, hidden) to projected ``context_kv``."""
        q = _split_heads(self.query(x), self.num_heads)
        mask = None if context_mask is None else ops.cast(context_mask, "bool")[:, None, None, :]
        return self.output_dense(_attend(q, *context_kv, mask, self.probs_dropout, training))

    def step(self, x, context_kv, context_mask):
        """Attend from one position ``x`` (batch, hidden) to projected ``context_kv``."""
        q = _one_position_heads(self.query(x), self.num_heads)
        mask = tf.cast(context_mask, tf.bool)[:, None, None, :]
        return self.output_dense(_attend_one(q, *context_kv, mask))

    def call(self, x, context, context_mask=None, training=None):
        """Attend from ``x`` (batch, q, hidden) to ``context`` (batch, ctx, hidden)."""
        return self.attend(x, self.project_context(context), context_mask, training)


@keras.saving.register_keras_serializable(package="bigkeras")
class TransformerDecoderBlock(ResidualBlock):
    """A Transformer decoder block: causal self-attention, optional cross-attention, FFN.

    Each sub-block has a residual connection; ``norm_first=True`` (pre-norm, GPT-2) normalises
    its input, ``norm_first=False`` (post-norm, the original paper) the residual sum. The
    parameter count equals ``keras_hub.layers.TransformerDecoder`` of the same shape.

    Args:
        hidden_dim: int, the width of the inputs and outputs; divisible by ``num_heads``.
        num_heads: int, the attention heads.
        intermediate_dim: int, the hidden width of the feed-forward network.
        dropout: float in [0, 1), on attention probabilities and sub-block outputs. Default 0.
        activation: str, the feed-forward activation. Default ``"gelu"``.
        norm_first: bool, pre-norm (True, default) or post-norm.
        layer_norm_epsilon: float. Default 1e-5.
        cross_attention: bool, whether the block attends to an encoder's outputs. Default False.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> block = TransformerDecoderBlock(hidden_dim=64, num_heads=4, intermediate_dim=256)
        >>> block(np.zeros((2, 10, 64), "float32"), padding_mask=np.ones((2, 10))).shape
        (2, 10, 64)
    """

    def __init__(self, *, cross_attention: bool = False, **kwargs):
        self.cross_attention = bool(cross_attention)  # read by _make_attention
        super().__init__(**kwargs)

    def _make_attention(self):
        heads = {"hidden_dim": self.hidden_dim, "num_heads": self.num_heads, "dropout": self.dropout}
        self.self_attention = self._sublayer(CausalSelfAttention, "self_attention", **heads)
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        if self.cross_attention:
            self.cross_attention_layer = self._sublayer(CrossAttention, "cross_attention", **heads)
            self.cross_attention_norm = self._norm("cross_attention_norm")
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")

    def build(self, input_shape):
        super().build(input_shape)
        self.self_attention.build(input_shape)
        self.self_attention_norm.build(input_shape)
        if self.cross_attention:
            self.cross_attention_layer.build(input_shape)
            self.cross_attention_norm.build(input_shape)

    def _forward(self, x, self_attend, cross_attend, training):
        """The block around given attention functions; returns (output, self_attend's extra)."""
        extra = []

        def attend(h):
            out, aux = self_attend(h)
            extra.append(aux)
            return out

        x = self._residual(x, attend, self.self_attention_norm, self.self_attention_dropout, training)
        if self.cross_attention:
            if cross_attend is None:
                raise ValueError("This block has `cross_attention=True`: pass the encoder outputs as `context`.")
            x = self._residual(x, cross_attend, self.cross_attention_norm, self.cross_attention_dropout, training)
        return self._feed_forward(x, training), extra[0]

    def _cross(self, context_kv, context_mask, training):
        if context_kv is None:
            return None
        return lambda h: self.cross_attention_layer.attend(h, context_kv, context_mask, training)

    def project_context(self, context):
        """The cross-attention keys and values of ``context``, to reuse across ``step`` calls."""
        return self.cross_attention_layer.project_context(context)

    def call(self, x, padding_mask=None, context=None, context_mask=None, training=None):
        """Apply the block to the whole sequence.

        Args:
            x: ``(batch, seq, hidden_dim)``.
            padding_mask: optional ``(batch, seq)``, 1 for real tokens; padded keys are ignored.
            context: ``(batch, ctx, hidden_dim)`` encoder outputs, when ``cross_attention``.
            context_mask: optional ``(batch, ctx)``, 1 for real context positions.
            training: bool, whether dropout is active.

        Returns:
            A tensor shaped like ``x``.
        """
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(x)[:2], "int32")
        mask = causal_mask(padding_mask)
        context_kv = None if context is None or not self.cross_attention else self.project_context(context)
        attend = lambda h: self.self_attention.prefill(h, mask, training=training)  # noqa: E731
        return self._forward(x, attend, self._cross(context_kv, context_mask, training), training)[0]

    def prefill(self, x, padding_mask, cache_length, context_kv=None, context_mask=None):
        """Run a prompt ``x`` (batch, seq, hidden); return ``(output, (key, value) cache)``.

        The cache tensors are ``(batch, heads, cache_length, head_dim)``, zero past ``seq``.
        """
        mask = causal_mask(padding_mask)
        attend = lambda h: self.self_attention.prefill(h, mask, cache_length)  # noqa: E731
        return self._forward(x, attend, self._cross(context_kv, context_mask, False), False)

    def step(self, x, cache, mask, index, context_kv=None, context_mask=None):
        """Decode one position ``x`` (batch, hidden) at ``index``; return (output, cache).

        ``context_kv`` comes from ``project_context``; ``context_mask`` is (batch, ctx).
        """
        attend = lambda h: self.self_attention.step(h, cache, mask, index)  # noqa: E731
        cross = None
        if context_kv is not None:
            cross = lambda h: self.cross_attention_layer.step(h, context_kv, context_mask)  # noqa: E731
        return self._forward(x, attend, cross, False)

    def get_config(self):
        config = super().get_config()
        config.update(cross_attention=self.cross_attention)
        return config


@keras.saving.register_keras_serializable(package="bigkeras")
class PositionIds(layers.Layer):
    """Positions that skip padding, from a padding mask: see ``position_ids``.

    Example:
        >>> PositionIds()(np.array([[0, 1, 1]]))
        [[0, 0, 1]]
    """

    def call(self, padding_mask):
        return position_ids(padding_mask)

    def compute_output_spec(self, padding_mask):
        return keras.KerasTensor(padding_mask.shape, "int32")


@keras.saving.register_keras_serializable(package="bigkeras")
class SinusoidalPositionEncoding(layers.Layer):
    """Fixed sine/cosine encodings of position ids (Vaswani et al., 2017, section 3.5).

    ``PE[p, i] = sin(p / 10000^(2i/d))`` for the first half of the width and ``cos`` for the
    second half (a permutation of the paper's interleaving, equivalent for a learned model).

    Args:
        hidden_dim: int, an even encoding width.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:
        >>> SinusoidalPositionEncoding(hidden_dim=8)(np.array([[0, 1, 2]])).shape
        (1, 3, 8)
    """

    def __init__(self, *, hidden_dim: int, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("hidden_dim", hidden_dim)
        if hidden_dim % 2:
            raise ValueError(f"`hidden_dim` must be even for sine/cosine pairs, got {hidden_dim}.")
        self.hidden_dim = hidden_dim

    def call(self, position_ids):
        half = self.hidden_dim // 2
        inv_freq = ops.exp(ops.arange(half, dtype="float32") * (-math.log(10000.0) / half))  # (half,)
        angles = ops.cast(position_ids, "float32")[..., None] * inv_freq  # (batch, seq, half)
        return ops.cast(ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim)
        return config
