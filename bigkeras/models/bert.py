"""BERT: a bidirectional Transformer encoder, its pre-training model and a classifier.

Devlin et al., 2018, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (https://arxiv.org/abs/1810.04805).

- ``bert_backbone``: token + segment + position embeddings, post-norm encoder blocks, pooler
  (a ``BertBackbone``, which exposes those parts; ``bigkeras.checkpoints`` loads published
  BERT weights into it).
- ``bert_pretraining``: the backbone plus a masked-LM head (tied to the token embedding) and a
  next-sentence head. The backbone is nested in it, so training it trains the backbone.
- ``bert_classifier``: a pre-trained backbone (or a fresh one) plus a classification head;
  this is the builder registered as the ``bert`` family.

Masking for pre-training is a ``tf.data`` step in ``bigkeras.data.masking``; a WordPiece
vocabulary trained on the corpus comes from ``bigkeras.data.wordpiece_tokenizer``.
"""

from __future__ import annotations

import keras
import keras_hub
from keras import layers, ops

from bigkeras import checks
from bigkeras.layers.transformer import TransformerEncoderBlock
from bigkeras.models.base import TransformerModel, int_inputs
from bigkeras.registry import register_family

BACKBONE_PRESETS = {
    # BERT-base uncased: 109,482,240 backbone parameters, as keras_hub's BertBackbone.
    "bert_base": {
        "vocab_size": 30522,
        "num_layers": 12,
        "hidden_dim": 768,
        "num_heads": 12,
        "intermediate_dim": 3072,
        "sequence_length": 512,
        "num_segments": 2,
        "dropout": 0.1,
    },
    "tiny": {
        "vocab_size": 64,
        "num_layers": 2,
        "hidden_dim": 32,
        "num_heads": 2,
        "intermediate_dim": 64,
        "sequence_length": 32,
        "num_segments": 2,
        "dropout": 0.0,
    },
}
# The registered ``bert`` family builds classifiers (two classes unless overridden).
PRESETS = {name: {**kwargs, "num_classes": 2} for name, kwargs in BACKBONE_PRESETS.items()}


def bert_backbone(**kwargs) -> BertBackbone:
    """Build a ``BertBackbone`` (the BERT encoder) from its keyword arguments; see that class."""
    return BertBackbone(**kwargs)


@keras.saving.register_keras_serializable(package="bigkeras")
class BertBackbone(TransformerModel):
    """The BERT encoder, a functional model that exposes its parts.

    Args:
        vocab_size: int, the number of token ids.
        num_layers: int, the encoder blocks.
        hidden_dim: int, the model width; divisible by ``num_heads``.
        num_heads: int, the attention heads.
        intermediate_dim: int, the feed-forward width.
        sequence_length: int, the longest input (rows of the position table). Default 512.
        num_segments: int, the segment (sentence A/B) ids. Default 2.
        dropout: float in [0, 1). Default 0.1.
        activation: str, the feed-forward activation: ``"gelu"`` (exact, erf: BERT's and
            Hugging Face's) or ``"gelu_approximate"`` (tanh: keras-hub's). Default ``"gelu"``.
        layer_norm_epsilon: float. Default 1e-12 (BERT's).
        name: str, the model name and layer-name prefix.

    Inputs and outputs: int inputs ``token_ids``, ``segment_ids`` and ``padding_mask``
    ``(batch, seq)`` (right-padded, ``seq <= sequence_length``); outputs
    ``{"sequence_output": (batch, seq, hidden), "pooled_output": (batch, hidden)}`` (the
    pooler is a tanh ``Dense`` on the first, ``[CLS]``, position).

    Parts (attributes): ``token_embedding`` (a ``ReversibleEmbedding``),
    ``position_embedding`` (keras-hub ``PositionEmbedding``), ``segment_embedding``,
    ``embeddings_norm``, ``blocks`` (the ``TransformerEncoderBlock`` list, each with
    ``attention`` (``query_dense``, ``key_dense``, ``value_dense``, ``output_dense``),
    ``attention_norm``, ``ffn_intermediate``, ``ffn_output``, ``ffn_norm``) and ``pooler``.

    Example:
        >>> backbone = bert_backbone(**BACKBONE_PRESETS["tiny"])
        >>> backbone.blocks[0].attention.query_dense.kernel.shape
        (32, 2, 16)
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_layers: int,
        hidden_dim: int,
        num_heads: int,
        intermediate_dim: int,
        sequence_length: int = 512,
        num_segments: int = 2,
        dropout: float = 0.1,
        activation: str = "gelu",
        layer_norm_epsilon: float = 1e-12,
        name: str = "bert",
        **kwargs,
    ):
        checks.positive_int("vocab_size", vocab_size)
        checks.positive_int("num_layers", num_layers)
        checks.positive_int("sequence_length", sequence_length)
        checks.positive_int("num_segments", num_segments)
        checks.fraction("dropout", dropout)
        checks.positive_number("layer_norm_epsilon", layer_norm_epsilon)
        arguments = dict(
            vocab_size=vocab_size, num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
            intermediate_dim=intermediate_dim, sequence_length=sequence_length, num_segments=num_segments,
            dropout=dropout, activation=activation, layer_norm_epsilon=layer_norm_epsilon,
        )

        inputs = _inputs()
        token_ids, segment_ids, padding_mask = inputs.values()

        token_embedding = layers.ReversibleEmbedding(
            vocab_size, hidden_dim, embeddings_initializer=_init(), name=f"{name}_token_embedding"
        )
        position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length, initializer=_init(), name=f"{name}_position_embedding"
        )
        segment_embedding = layers.Embedding(
            num_segments, hidden_dim, embeddings_initializer=_init(), name=f"{name}_segment_embedding"
        )
        embeddings_norm = layers.LayerNormalization(epsilon=layer_norm_epsilon, name=f"{name}_embeddings_norm")
        tokens = token_embedding(token_ids)
        x = layers.Add(name=f"{name}_embeddings_add")(
            [tokens, position_embedding(tokens), segment_embedding(segment_ids)]
        )  # (batch, seq, hidden)
        x = embeddings_norm(x)
        x = layers.Dropout(dropout, name=f"{name}_embeddings_dropout")(x)
        blocks = [
            TransformerEncoderBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                dropout=dropout,
                activation=activation,
                norm_first=False,  # post-norm, as in BERT
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"{name}_block{i}",
            )
            for i in range(num_layers)
        ]
        for block in blocks:
            x = block(x, padding_mask=padding_mask)
        pooler = layers.Dense(hidden_dim, activation="tanh", kernel_initializer=_init(), name=f"{name}_pooler")
        pooled = pooler(x[:, 0, :])
        super().__init__(
            inputs,
            {"sequence_output": x, "pooled_output": pooled},
            arguments=arguments,
            parts=dict(
                token_embedding=token_embedding, position_embedding=position_embedding,
                segment_embedding=segment_embedding, embeddings_norm=embeddings_norm, blocks=blocks, pooler=pooler,
            ),
            name=name,
            **kwargs,
        )

    def role_layers(self):
        """LoRA roles: ``query``, ``key``, ``value``, ``attention_output``, ``ffn`` (both layers)."""
        attention = [block.attention for block in self.blocks]
        return {
            "query": [a.query_dense for a in attention],
            "key": [a.key_dense for a in attention],
            "value": [a.value_dense for a in attention],
            "attention_output": [a.output_dense for a in attention],
            "ffn": [layer for b in self.blocks for layer in (b.ffn_intermediate, b.ffn_output)],
        }


def bert_pretraining(*, backbone: keras.Model | None = None, **backbone_kwargs) -> keras.Model:
    """BERT with its pre-training heads: masked-LM (tied to the token embedding) and NSP.

    Args:
        backbone: a ``BertBackbone`` to pre-train, nested in the returned model (find it
            there with ``isinstance(layer, BertBackbone)``); its weights are shared. Default:
            build one from ``backbone_kwargs``.
        **backbone_kwargs: ``bert_backbone`` arguments, when ``backbone`` is None.

    Returns:
        A functional ``keras.Model`` with the backbone's inputs plus ``mask_positions``
        ``(batch, num_masked)`` (positions to predict, from ``bigkeras.data.masking``) and
        float32 outputs ``{"mlm_logits": (batch, num_masked, vocab), "nsp_logits": (batch, 2)}``.

    Example:
        >>> backbone = bert_backbone(**BACKBONE_PRESETS["tiny"])
        >>> pretrainer = bert_pretraining(backbone=backbone)  # train it, then:
        >>> classifier = bert_classifier(backbone=backbone, num_classes=3)
    """
    if backbone is None:
        backbone = bert_backbone(**backbone_kwargs)
    elif backbone_kwargs:
        raise ValueError(f"Pass either `backbone` or backbone arguments, not both; got {sorted(backbone_kwargs)}.")
    name = backbone.name
    token_embedding = backbone.token_embedding
    hidden_dim = token_embedding.output_dim
    backbone_inputs = _inputs()
    outputs = backbone(backbone_inputs)  # nested: the pre-trained backbone stays one reusable model
    sequence, pooled = outputs["sequence_output"], outputs["pooled_output"]

    mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    # (batch, num_masked, hidden): the encoder outputs at the masked positions.
    x = ops.take_along_axis(sequence, ops.expand_dims(mask_positions, -1), axis=1)
    x = layers.Dense(hidden_dim, activation="gelu", kernel_initializer=_init(), name=f"{name}_mlm_dense")(x)
    x = layers.LayerNormalization(epsilon=1e-12, name=f"{name}_mlm_norm")(x)
    x = token_embedding(x, reverse=True)  # (batch, num_masked, vocab), tied weights
    mlm_logits = OutputBias(dtype="float32", name="mlm_logits")(x)
    nsp_logits = layers.Dense(2, kernel_initializer=_init(), dtype="float32", name="nsp_logits")(pooled)
    inputs = {**backbone_inputs, "mask_positions": mask_positions}
    return keras.Model(inputs, {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}, name=f"{name}_pretraining")


def bert_classifier(
    *, num_classes: int, backbone: keras.Model | None = None, dropout: float = 0.1, **backbone_kwargs
) -> keras.Model:
    """A sequence classifier: a BERT backbone, dropout and a ``Dense`` on the pooled output.

    Args:
        num_classes: int, the classes.
        backbone: a (pre-trained) ``bert_backbone``, fine-tuned with the head. Default: build
            one from ``backbone_kwargs`` (which then also receives ``dropout``).
        dropout: float in [0, 1), before the head. Default 0.1.
        **backbone_kwargs: ``bert_backbone`` arguments, when ``backbone`` is None.

    Returns:
        A functional ``keras.Model`` with the backbone's three inputs and float32 ``logits``
        ``(batch, num_classes)``.

    Example:
        >>> classifier = bert_classifier(backbone=pretrained_backbone, num_classes=2)
        >>> classifier.compile(keras.optimizers.Adam(2e-5), "sparse_categorical_crossentropy")
    """
    checks.positive_int("num_classes", num_classes)
    checks.fraction("dropout", dropout)
    if backbone is None:
        backbone = bert_backbone(dropout=dropout, **backbone_kwargs)
    elif backbone_kwargs:
        raise ValueError(f"Pass either `backbone` or backbone arguments, not both; got {sorted(backbone_kwargs)}.")
    inputs = _inputs()
    pooled = backbone(inputs)["pooled_output"]
    x = layers.Dropout(dropout, name=f"{backbone.name}_classifier_dropout")(pooled)
    logits = layers.Dense(num_classes, kernel_initializer=_init(), dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=f"{backbone.name}_classifier")


@keras.saving.register_keras_serializable(package="bigkeras")
class OutputBias(layers.Layer):
    """Adds a learned bias over the last axis (the masked-LM head's per-token bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        return ops.cast(x, self.compute_dtype) + self.bias


def _inputs():
    return int_inputs("token_ids", "segment_ids", "padding_mask")


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


register_family("bert", bert_classifier, PRESETS)
