"""Hugging Face checkpoint directories (``config.json`` + ``model.safetensors``): BERT, GPT-2, T5.

Each architecture has one table (``bert_table``, ``gpt2_table``) from Hugging Face tensor
names to the variables of a bigkeras model, built from the model's exposed parts. Loading
and saving both read it, so bigkeras -> Hugging Face -> bigkeras is exact.

- BERT: ``BertModel``, ``BertForMaskedLM``, ``BertForSequenceClassification`` and
  ``BertForPreTraining`` bodies -> ``BertBackbone`` (their heads are not loaded).
- GPT-2: ``GPT2Model``, ``GPT2LMHeadModel`` -> ``GPT`` with its tied output projection.
- T5: ``T5ForConditionalGeneration`` -> ``T5`` (its table is in ``bigkeras.checkpoints.t5``).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from bigkeras.checkpoints import t5
from bigkeras.checkpoints.common import (
    activation, check_dimensions, check_float, check_heads, config_float, config_int, hf_activation, read_header,
    read_json, read_tensors,
)
from bigkeras.checkpoints.mapping import CheckpointError, Tensor, assign, export

CONFIG, WEIGHTS = "config.json", "model.safetensors"
# What a Hugging Face config field becomes in a bigkeras builder's arguments.
BERT_FIELDS = {
    "vocab_size": "vocab_size", "num_hidden_layers": "num_layers", "hidden_size": "hidden_dim",
    "num_attention_heads": "num_heads", "intermediate_size": "intermediate_dim",
    "max_position_embeddings": "sequence_length", "type_vocab_size": "num_segments",
}
GPT2_FIELDS = {
    "vocab_size": "vocab_size", "n_layer": "num_layers", "n_embd": "hidden_dim", "n_head": "num_heads",
    "n_positions": "sequence_length",
}
# Tensors of the task heads around a BERT body, and non-weight buffers: present, not loaded.
BERT_HEADS = ("cls.", "classifier.", "qa_outputs.")
BUFFERS = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias")


# Files
# ---------------------------------------------------------------------------------------
def read_config(directory: pathlib.Path) -> dict:
    """``config.json`` of a checkpoint directory: a JSON object, or an error naming the file."""
    path = directory / CONFIG
    try:
        return read_json(path)
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {CONFIG}: not a Hugging Face checkpoint directory.") from None


def write_safetensors(path: pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


# Configs
# ---------------------------------------------------------------------------------------
def _fields(config: dict, fields, source) -> dict:
    """``{ours: config[theirs]}`` for integer fields, each present and within limits."""
    return {ours: config_int(config, theirs, source) for theirs, ours in fields.items()}


def bert_arguments(config: dict, source) -> dict:
    """``BertBackbone`` arguments from a Hugging Face ``BertConfig`` dict, every field checked."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{source}: position_embedding_type={config['position_embedding_type']!r} is not supported; "
            "supported: 'absolute'."
        )
    arguments = _fields(config, BERT_FIELDS, source)
    check_heads(config, "hidden_size", "num_attention_heads", source)
    return {
        **arguments,
        "dropout": config_float(config, "hidden_dropout_prob", source, default=0.1),
        "activation": activation(config.get("hidden_act", "gelu"), "hidden_act", source),
        "layer_norm_epsilon": config_float(config, "layer_norm_eps", source, default=1e-12),
    }


def bert_dimensions(config: dict) -> tuple[dict, list]:
    """``(dimensions, layers)`` of ``common.check_dimensions`` for a checked ``BertConfig``."""
    field = lambda *names: tuple((name, config[name]) for name in names)  # noqa: E731
    return {
        "embeddings.word_embeddings.weight": field("vocab_size", "hidden_size"),
        "embeddings.position_embeddings.weight": field("max_position_embeddings", "hidden_size"),
        "embeddings.token_type_embeddings.weight": field("type_vocab_size", "hidden_size"),
        "encoder.layer.0.intermediate.dense.weight": field("intermediate_size", "hidden_size"),
    }, [("encoder.layer.", "num_hidden_layers", config["num_hidden_layers"])]


def gpt2_arguments(config: dict, source) -> dict:
    """``GPT`` arguments from a Hugging Face ``GPT2Config`` dict, every field checked."""
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if config.get(flag):
            raise CheckpointError(f"{source}: {flag}=true is not supported by bigkeras' GPT.")
    if config.get("scale_attn_weights", True) is False:
        raise CheckpointError(f"{source}: scale_attn_weights=false is not supported by bigkeras' GPT.")
    arguments = _fields(config, GPT2_FIELDS, source)
    check_heads(config, "n_embd", "n_head", source)
    return {
        **arguments,
        "intermediate_dim": config_int(config, "n_inner", source, default=4 * config["n_embd"]),
        "dropout": config_float(config, "resid_pdrop", source, default=0.1),
        "activation": activation(config.get("activation_function", "gelu"), "activation_function", source),
        "layer_norm_epsilon": config_float(config, "layer_norm_epsilon", source, default=1e-5),
    }


def gpt2_dimensions(config: dict, arguments: dict) -> tuple[dict, list]:
    """``(dimensions, layers)`` of ``common.check_dimensions`` for a checked ``GPT2Config``."""
    embd = ("n_embd", config["n_embd"])
    return {
        "wte.weight": (("vocab_size", config["vocab_size"]), embd),
        "wpe.weight": (("n_positions", config["n_positions"]), embd),
        "h.0.mlp.c_fc.weight": (embd, ("n_inner", arguments["intermediate_dim"])),  # Conv1D: (in, out)
    }, [("h.", "n_layer", config["n_layer"])]


def bert_config(backbone) -> dict:
    """The Hugging Face ``BertConfig`` of a ``BertBackbone`` (a ``BertModel``)."""
    a = backbone.arguments
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        **{theirs: a[ours] for theirs, ours in BERT_FIELDS.items()},
        "hidden_act": hf_activation(a["activation"]),
        "hidden_dropout_prob": a["dropout"],
        "attention_probs_dropout_prob": a["dropout"],
        "layer_norm_eps": a["layer_norm_epsilon"],
        "initializer_range": 0.02,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }


def gpt2_config(model) -> dict:
    """The Hugging Face ``GPT2Config`` of a ``GPT`` model (a ``GPT2LMHeadModel``)."""
    a = model.arguments
    last_id = min(50256, a["vocab_size"] - 1)  # GPT-2's <|endoftext|>, or the last id of a smaller vocabulary
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **{theirs: a[ours] for theirs, ours in GPT2_FIELDS.items()},
        "n_inner": a["intermediate_dim"],
        "activation_function": hf_activation(a["activation"]),
        "resid_pdrop": a["dropout"],
        "embd_pdrop": a["dropout"],
        "attn_pdrop": a["dropout"],
        "layer_norm_epsilon": a["layer_norm_epsilon"],
        "initializer_range": 0.02,
        "bos_token_id": last_id,
        "eos_token_id": last_id,
        "tie_word_embeddings": True,
    }


# Tables: Hugging Face tensor name -> the variable of a bigkeras part
# ---------------------------------------------------------------------------------------
def _norm(key, norm):
    return [Tensor(f"{key}.weight", norm.gamma), Tensor(f"{key}.bias", norm.beta)]


def _dense(key, dense, split=1, linear=True):
    """A PyTorch ``Linear`` (``linear=True``) or GPT-2 ``Conv1D`` (stored as Keras stores it)."""
    kernel = Tensor.linear(f"{key}.weight", dense.kernel, split) if linear else Tensor(f"{key}.weight", dense.kernel)
    return [kernel, Tensor.vector(f"{key}.bias", dense.bias)]


def bert_table(backbone) -> list[Tensor]:
    """The ``BertModel`` tensors of a ``BertBackbone``."""
    table = [
        Tensor("embeddings.word_embeddings.weight", backbone.token_embedding.embeddings),
        Tensor("embeddings.position_embeddings.weight", backbone.position_embedding.position_embeddings),
        Tensor("embeddings.token_type_embeddings.weight", backbone.segment_embedding.embeddings),
        *_norm("embeddings.LayerNorm", backbone.embeddings_norm),
    ]
    for i, block in enumerate(backbone.blocks):
        key, attention = f"encoder.layer.{i}", block.attention
        table += [
            *_dense(f"{key}.attention.self.query", attention.query_dense),
            *_dense(f"{key}.attention.self.key", attention.key_dense),
            *_dense(f"{key}.attention.self.value", attention.value_dense),
            *_dense(f"{key}.attention.output.dense", attention.output_dense, split=2),
            *_norm(f"{key}.attention.output.LayerNorm", block.attention_norm),
            *_dense(f"{key}.intermediate.dense", block.ffn_intermediate),
            *_dense(f"{key}.output.dense", block.ffn_output),
            *_norm(f"{key}.output.LayerNorm", block.ffn_norm),
        ]
    return table + _dense("pooler.dense", backbone.pooler)


def gpt2_table(model) -> list[Tensor]:
    """The ``GPT2Model`` tensors of a ``GPT`` (the LM head is the tied token embedding)."""
    table = [
        Tensor("wte.weight", model.token_embedding.embeddings),
        Tensor("wpe.weight", model.position_embedding.embeddings),
    ]
    for i, block in enumerate(model.blocks):
        key = f"h.{i}"
        table += [
            *_norm(f"{key}.ln_1", block.self_attention_norm),
            *_dense(f"{key}.attn.c_attn", block.self_attention.qkv, linear=False),
            *_dense(f"{key}.attn.c_proj", block.self_attention.output_dense, linear=False),
            *_norm(f"{key}.ln_2", block.ffn_norm),
            *_dense(f"{key}.mlp.c_fc", block.ffn_intermediate, linear=False),
            *_dense(f"{key}.mlp.c_proj", block.ffn_output, linear=False),
        ]
    return table + _norm("ln_f", model.final_norm)


# Loading and saving
# ---------------------------------------------------------------------------------------
def model_type(directory: pathlib.Path, config: dict | None = None) -> str:
    """``"bert"``, ``"gpt2"`` or ``"t5"``; any other architecture is a clear error."""
    config = read_config(directory) if config is None else config
    kind = config.get("model_type")
    if kind not in ("bert", "gpt2", "t5"):
        raise CheckpointError(
            f"{directory / CONFIG}: model_type {kind!r} (architectures {config.get('architectures')}) is not "
            "supported; supported Hugging Face architectures: bert (BertModel, BertForMaskedLM, "
            "BertForSequenceClassification), gpt2 (GPT2Model, GPT2LMHeadModel) and t5 "
            "(T5ForConditionalGeneration)."
        )
    return kind


def load(directory: pathlib.Path, build):
    """Build the bigkeras model of a Hugging Face directory and load every weight.

    The config's fields and the weights file's header (names, shapes, dtypes) are checked
    against each other and against ``common.MAX_FIELD`` before anything is built or read, so
    a config that claims a model larger than its file raises instead of allocating it.

    Args:
        directory: the checkpoint directory.
        build: ``build(kind, arguments, source)`` -> the ``BertBackbone`` (kind ``"bert"``)
            or ``GPT`` (``"gpt"``) for the checkpoint's arguments (``bigkeras.checkpoints``
            merges and checks the user's overrides there).

    Raises:
        CheckpointError: a malformed or inconsistent file or field, naming both.
    """
    config = read_config(directory)
    kind = model_type(directory, config)
    source, config_path = directory / WEIGHTS, directory / CONFIG
    header = read_header(source)
    if kind == "t5":
        return t5.load(directory, config, header, build, source)
    if kind == "bert":
        arguments = bert_arguments(config, config_path)
        header, heads = _strip(header, "bert.", keep=BERT_HEADS, source=source)
        header = _legacy_norm_names(header)
        dimensions, layers = bert_dimensions(config)
    else:
        arguments = gpt2_arguments(config, config_path)
        header, heads = _strip(header, "transformer.", keep=(), source=source)
        dimensions, layers = gpt2_dimensions(config, arguments)
    check_dimensions(header, dimensions, layers, weights=source, config=config_path)
    body = {name: info for name, info in header.items() if name not in heads}  # task heads are not read
    check_float(body, source)
    tensors = read_tensors(source, body)
    if kind == "bert":
        model = build("bert", arguments, directory)
        # BertForMaskedLM has no pooler: it stays at its initial weights.
        assign(bert_table(model), tensors, source=source, ignored=heads,
               optional={"pooler.dense.weight", "pooler.dense.bias"})
        return model
    if "lm_head.weight" in tensors and not np.array_equal(tensors.pop("lm_head.weight"), tensors.get("wte.weight")):
        raise CheckpointError(f"{source}: 'lm_head.weight' differs from 'wte.weight'; bigkeras' GPT ties them.")
    model = build("gpt", arguments, directory)
    assign(gpt2_table(model), tensors, source=source, ignored=set())
    return model


def _strip(tensors: dict, prefix: str, keep, source) -> tuple[dict, set]:
    """Remove a task model's ``prefix`` from body tensors and drop buffers; return (tensors, head keys).

    Raises:
        CheckpointError: a tensor is in ``source`` both with and without the prefix.
    """
    body, heads = {}, set()
    for key, value in tensors.items():
        if key.endswith(BUFFERS) or key in BUFFERS:
            continue
        if key.startswith(keep):
            heads.add(key)
            body[key] = value
            continue
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name in body:
            raise CheckpointError(f"{source} holds the tensor {name!r} twice, as {name!r} and {prefix + name!r}.")
        body[name] = value
    return body, heads


def _legacy_norm_names(tensors: dict) -> dict:
    # Checkpoints converted from the original TensorFlow BERT name norm weights gamma/beta.
    renamed = {".gamma": ".weight", ".beta": ".bias"}
    return {next((k[: -len(old)] + new for old, new in renamed.items() if "LayerNorm" in k and k.endswith(old)), k): v
            for k, v in tensors.items()}


def save(model, directory: pathlib.Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` of a ``BertBackbone``, ``GPT`` or ``T5``."""
    from bigkeras.models.bert import BertBackbone
    from bigkeras.models.gpt import GPT
    from bigkeras.models.t5 import T5

    if isinstance(model, T5):
        config, tensors = t5.save(model)
    elif isinstance(model, BertBackbone):
        config, tensors = bert_config(model), export(bert_table(model))
    elif isinstance(model, GPT):
        config = gpt2_config(model)
        tensors = {f"transformer.{k}": v for k, v in export(gpt2_table(model)).items()}
    else:
        raise CheckpointError(
            f"save_hf writes a bigkeras BertBackbone or GPT (or a model built on one) or a T5, got "
            f"{type(model).__name__} {model.name!r}."
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(directory / WEIGHTS, tensors)
