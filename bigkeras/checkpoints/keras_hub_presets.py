"""keras-hub preset directories (``config.json`` + ``model.weights.h5``): BERT and GPT-2.

keras-hub itself loads the preset into its own backbone; the weights then go through the
same Hugging Face tables as a Hugging Face directory (``huggingface.bert_table``,
``gpt2_table``), read from keras-hub's parts. keras-hub's BERT and GPT-2 use the tanh
approximation of GELU, so the bigkeras model gets ``activation="gelu_approximate"`` and
computes what keras-hub's model computes.
"""

from __future__ import annotations

import json
import pathlib
from types import SimpleNamespace

import numpy as np

from bigkeras.checkpoints.huggingface import bert_table, gpt2_table
from bigkeras.checkpoints.mapping import CheckpointError, assign, export, keras_value


def is_preset(directory: pathlib.Path) -> bool:
    """Whether ``directory`` is a keras-hub preset (its config.json names a keras-hub class)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return str(config.get("registered_name", "")).startswith("keras_hub>")


def load(directory: pathlib.Path, build):
    """Build the bigkeras model of a keras-hub ``BertBackbone`` or ``GPT2Backbone`` preset.

    Args:
        directory: the preset directory.
        build: ``build(kind, arguments, source)`` -> the bigkeras model, as in
            ``huggingface.load``.
    """
    import keras_hub

    theirs = keras_hub.models.Backbone.from_preset(str(directory))
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
            "GPT2Backbone."
        )
    return model


def _block(layer, **attention):
    # A keras-hub TransformerEncoder/Decoder under bigkeras' block part names.
    return SimpleNamespace(
        **attention, attention_norm=layer._self_attention_layer_norm, self_attention_norm=layer._self_attention_layer_norm,
        ffn_intermediate=layer._feedforward_intermediate_dense, ffn_output=layer._feedforward_output_dense,
        ffn_norm=layer._feedforward_layer_norm,
    )


def _bert_parts(theirs):
    """keras-hub's ``BertBackbone`` seen through bigkeras ``BertBackbone``'s part names."""
    return SimpleNamespace(
        token_embedding=theirs.token_embedding, position_embedding=theirs.position_embedding,
        segment_embedding=theirs.segment_embedding, embeddings_norm=theirs.embeddings_layer_norm,
        blocks=[_block(layer, attention=layer._self_attention_layer) for layer in theirs.transformer_layers],
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
        blocks=[_block(layer, self_attention=fused(layer._self_attention_layer)) for layer in theirs.transformer_layers],
        final_norm=theirs.layer_norm,
    )
