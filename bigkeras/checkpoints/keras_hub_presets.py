"""keras-hub preset directories (``config.json`` + ``model.weights.h5``): BERT, GPT-2 and T5.

keras-hub itself loads the preset into its own backbone; the weights then go through the
same Hugging Face tables as a Hugging Face directory (``huggingface.bert_table``,
``gpt2_table``, ``t5.t5_table``), read from keras-hub's parts. keras-hub's BERT and GPT-2 use the tanh
approximation of GELU, so the bigkeras model gets ``activation="gelu_approximate"`` and
computes what keras-hub's model computes. A ``T5Backbone`` keeps its own activation (its
config names it) and has as many decoder blocks as encoder blocks.
"""

from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace

import numpy as np

from bigkeras import private_apis
from bigkeras.checkpoints.common import config_int, first_line, h5_parameters, read_json
from bigkeras.checkpoints.huggingface import bert_table, gpt2_table
from bigkeras.checkpoints.mapping import CheckpointError, assign, export, keras_value

WEIGHTS = "model.weights.h5"
# Config fields of the supported backbones that set a weight's shape (optional ones may be absent).
SHAPE_FIELDS = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim")
OPTIONAL_SHAPE_FIELDS = ("max_sequence_length", "num_segments", "key_value_dim")


def is_preset(directory: pathlib.Path) -> bool:
    """Whether ``directory`` is a keras-hub preset (its config.json names a keras-hub class)."""
    try:
        config = read_json(directory / "config.json")
    except (OSError, CheckpointError):  # not a preset; the Hugging Face reader names what is wrong
        return False
    return str(config.get("registered_name", "")).startswith("keras_hub>")


def load(directory: pathlib.Path, build):
    """Build the bigkeras model of a keras-hub ``BertBackbone``, ``GPT2Backbone`` or ``T5Backbone`` preset.

    Args:
        directory: the preset directory.
        build: ``build(kind, arguments, source)`` -> the bigkeras model, as in
            ``huggingface.load``.
    """
    import keras_hub

    check_preset(directory)
    try:
        theirs = keras_hub.models.Backbone.from_preset(str(directory))
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise CheckpointError(f"{directory}: keras-hub could not load this preset: {first_line(error)}") from None
    if isinstance(theirs, keras_hub.models.T5Backbone):  # relative positions: a shape of its own
        from bigkeras.checkpoints.t5 import t5_table

        model = build("t5", _t5_arguments(theirs), directory)
        assign(t5_table(model), export(t5_table(_t5_parts(theirs, model.arguments))), source=directory)
        return model
    shape = {"vocab_size": theirs.vocabulary_size, "num_layers": theirs.num_layers, "hidden_dim": theirs.hidden_dim,
             "num_heads": theirs.num_heads, "intermediate_dim": theirs.intermediate_dim,
             "sequence_length": theirs.max_sequence_length, "dropout": float(theirs.dropout),
             "activation": "gelu_approximate"}  # fmt: skip
    if isinstance(theirs, keras_hub.models.BertBackbone):
        model = build("bert", {**shape, "num_segments": theirs.num_segments, "layer_norm_epsilon": 1e-12}, directory)
        assign(bert_table(model), export(bert_table(_bert_parts(theirs))), source=directory)
    elif isinstance(theirs, keras_hub.models.GPT2Backbone):
        model = build("gpt", {**shape, "layer_norm_epsilon": 1e-5}, directory)
        assign(gpt2_table(model), export(gpt2_table(_gpt2_parts(theirs))), source=directory)
    else:
        raise CheckpointError(
            f"{directory}: keras-hub {type(theirs).__name__} presets are not supported; supported: BertBackbone, "
            "GPT2Backbone, T5Backbone."
        )
    return model


def check_preset(directory: pathlib.Path) -> None:
    """The preset's config fields and its weights file, checked before keras-hub builds anything.

    Each shape field must be an integer within ``common.MAX_FIELD``, and the parameters the
    config implies at the least (embeddings and feed-forward layers) must fit in the
    weights file, so a config that claims a larger model than its file raises here instead of
    allocating it.

    Raises:
        CheckpointError: a malformed ``config.json`` or field, or an unreadable or too small
            ``model.weights.h5``, naming the file and the field.
    """
    path = directory / "config.json"
    fields = read_json(path).get("config")
    if not isinstance(fields, dict):
        raise CheckpointError(f"{path}: the field 'config' must be a JSON object of the backbone's arguments.")
    source = f"{path} (field 'config')"
    sizes = {name: config_int(fields, name, source) for name in SHAPE_FIELDS}
    sizes.update({name: config_int(fields, name, source, default=0, low=0) for name in OPTIONAL_SHAPE_FIELDS})
    # At the least: token (and position) embeddings and each layer's two feed-forward kernels.
    implied = (sizes["vocabulary_size"] + sizes["max_sequence_length"]) * sizes["hidden_dim"] + (
        sizes["num_layers"] * 2 * sizes["hidden_dim"] * sizes["intermediate_dim"])  # fmt: skip
    if not (directory / WEIGHTS).is_file():
        raise CheckpointError(f"{directory / WEIGHTS} does not exist: a keras-hub preset needs its {WEIGHTS}.")
    stored = h5_parameters(directory / WEIGHTS)
    if implied > stored:
        described = ", ".join(f"{k}={v}" for k, v in sizes.items() if v)
        raise CheckpointError(
            f"{path} describes a model of at least {implied:,} parameters ({described}); {directory / WEIGHTS} "
            f"holds {stored:,}. The config does not describe these weights."
        )


def _block(layer, attention_name, attention=lambda sublayer: sublayer):
    # A keras-hub TransformerEncoder/Decoder under bigkeras' block part names; its self-attention
    # (passed through ``attention``) under ``attention_name``.
    parts = private_apis.keras_hub_block_parts(layer)
    return SimpleNamespace(
        **{attention_name: attention(parts.self_attention)},
        attention_norm=parts.self_attention_norm, self_attention_norm=parts.self_attention_norm,
        ffn_intermediate=parts.ffn_intermediate, ffn_output=parts.ffn_output, ffn_norm=parts.ffn_norm,
    )


def _bert_parts(theirs):
    """keras-hub's ``BertBackbone`` seen through bigkeras ``BertBackbone``'s part names."""
    return SimpleNamespace(
        token_embedding=theirs.token_embedding, position_embedding=theirs.position_embedding,
        segment_embedding=theirs.segment_embedding, embeddings_norm=theirs.embeddings_layer_norm,
        blocks=[_block(layer, "attention") for layer in theirs.transformer_layers],
        pooler=theirs.pooled_dense,
    )


def _gpt2_parts(theirs):
    """keras-hub's ``GPT2Backbone`` seen through bigkeras ``GPT``'s part names (q, k, v fused)."""

    def fused(attention):
        dense = (attention.query_dense, attention.key_dense, attention.value_dense)
        hidden = attention.query_dense.kernel.shape[0]
        qkv = SimpleNamespace(
            kernel=np.concatenate([np.reshape(keras_value(d.kernel), (hidden, -1)) for d in dense], axis=-1),
            bias=np.concatenate([np.reshape(keras_value(d.bias), (-1,)) for d in dense]),
        )
        output = attention.output_dense
        kernel = np.reshape(keras_value(output.kernel), (-1, output.kernel.shape[-1]))
        return SimpleNamespace(qkv=qkv, output_dense=SimpleNamespace(kernel=kernel, bias=output.bias))

    return SimpleNamespace(
        token_embedding=theirs.token_embedding,
        position_embedding=SimpleNamespace(embeddings=theirs.position_embedding.position_embeddings),
        blocks=[_block(layer, "self_attention", fused) for layer in theirs.transformer_layers],
        final_norm=theirs.layer_norm,
    )


def _t5_arguments(theirs) -> dict:
    """bigkeras ``T5`` arguments of a keras-hub ``T5Backbone``."""
    import keras

    activation = keras.activations.serialize(theirs.activation)
    activation = activation if isinstance(activation, str) else activation.get("config", activation)
    if not isinstance(activation, str):
        raise CheckpointError(f"keras-hub T5Backbone activation {activation!r} has no name bigkeras can rebuild.")
    activation = activation.split(">")[-1]  # "keras_hub>gelu_approximate" and the like
    return {
        "vocab_size": theirs.vocabulary_size, "num_encoder_layers": theirs.num_layers,
        "num_decoder_layers": theirs.num_layers, "hidden_dim": theirs.hidden_dim, "num_heads": theirs.num_heads,
        "intermediate_dim": theirs.intermediate_dim,
        "key_value_dim": theirs.key_value_dim or theirs.hidden_dim // theirs.num_heads,
        "dropout": float(theirs.dropout), "activation": activation,
        "use_gated_activation": bool(theirs.use_gated_activation), "tie_embeddings": bool(theirs.tie_embedding_weights),
        "layer_norm_epsilon": float(theirs.layer_norm_epsilon),
    }


def _t5_parts(theirs, arguments):
    """keras-hub's ``T5Backbone`` seen through bigkeras ``T5``'s part names."""

    def dense(layer):
        return SimpleNamespace(kernel=layer.kernel)

    def attention(layer):
        return SimpleNamespace(query_dense=dense(layer.query_projector), key_dense=dense(layer.key_projector),
                               value_dense=dense(layer.value_projector), output_dense=dense(layer.output_projector))

    def norm(layer):
        return SimpleNamespace(scale=layer.weight)

    def block(layer):
        decoder = layer.is_decoder
        own = layer.self_attention
        bias = own.relative_attention_bias if own.use_relative_attention_bias else None
        return SimpleNamespace(
            self_attention=attention(layer.self_attention), self_attention_norm=norm(layer.self_attention_layer_norm),
            position_bias=None if bias is None else SimpleNamespace(embeddings=bias),
            cross_attention=attention(layer.cross_attention) if decoder else None,
            cross_attention_norm=norm(layer.cross_attention_layer_norm) if decoder else None,
            ffn_intermediate=dense(layer.input_projector),
            ffn_gate=dense(layer.gate_projector) if layer.use_gated_activation else None,
            ffn_output=dense(layer.output_projector), ffn_norm=norm(layer.layer_norm),
        )

    return SimpleNamespace(
        arguments=arguments, token_embedding=theirs.token_embedding,
        encoder_blocks=[block(layer) for layer in theirs.encoder_transformer_layers],
        decoder_blocks=[block(layer) for layer in theirs.decoder_transformer_layers],
        encoder_norm=norm(theirs.encoder_layer_norm), decoder_norm=norm(theirs.decoder_layer_norm),
    )
