"""Hugging Face T5 directories (``T5ForConditionalGeneration``) <-> bigkeras ``T5``.

One table (``t5_table``) from Hugging Face tensor names to the variables of a ``T5``'s exposed
parts, read by loading and saving, so bigkeras -> Hugging Face -> bigkeras is exact.

The output projection comes in three forms:

- T5 1.0 (``t5-small``...): tied to ``shared.weight``, the decoder output scaled by
  ``d_model ** -0.5`` -> ``T5(tie_embeddings=True)``;
- T5 1.1 (``t5-v1_1-*``, ``tie_word_embeddings: false``): a separate ``lm_head.weight``, no
  rescale -> ``T5(tie_embeddings=False)``;
- transformers 5 ties T5's head at construction whatever the config says, so a T5 1.1
  shaped model it saves has no ``lm_head.weight`` and ``"scale_decoder_outputs": false``:
  loaded as ``tie_embeddings=False`` with the head a copy of ``shared.weight`` (the same
  logits; fine-tuning then trains the two separately).
"""

from __future__ import annotations

import pathlib

import numpy as np

from bigkeras.checkpoints.common import (
    ACTIVATIONS, check_dimensions, check_float, check_heads, config_float, config_int, hf_activation, read_tensors,
)
from bigkeras.checkpoints.mapping import CheckpointError, Tensor, assign, export

FIELDS = {  # Hugging Face T5Config field -> T5 argument
    "vocab_size": "vocab_size", "num_layers": "num_encoder_layers", "num_decoder_layers": "num_decoder_layers",
    "d_model": "hidden_dim", "num_heads": "num_heads", "d_ff": "intermediate_dim", "d_kv": "key_value_dim",
    "relative_attention_num_buckets": "num_buckets", "relative_attention_max_distance": "max_distance",
}
# Present in Hugging Face files, not weights of the model: tied copies of ``shared.weight``
# and a cross-attention bias Hugging Face itself ignores.
TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
REQUIRED = ("vocab_size", "d_model", "num_heads", "d_ff", "num_layers")  # fields without a default


def t5_arguments(config: dict, source) -> dict:
    """``T5`` arguments from a Hugging Face ``T5Config`` dict (without the head's form), every
    field checked."""
    projection = str(config.get("feed_forward_proj", "relu"))
    parts = projection.split("-")
    gated = parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise CheckpointError(f"{source}: feed_forward_proj={projection!r} is neither 'ACT' nor 'gated-ACT'.")
    # Hugging Face reads "gated-gelu" as the tanh approximation (gelu_new), for T5 1.1.
    activation = "gelu_new" if projection == "gated-gelu" else parts[-1]
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: feed_forward_proj={projection!r} (activation {activation!r}) is not supported; supported "
            f"activations: {', '.join(ACTIVATIONS)} (e.g. 'relu', 'gated-gelu')."
        )
    for field in REQUIRED:
        config_int(config, field, source)
    if config.get("d_kv") is None:  # heads split d_model; with d_kv they need not
        check_heads(config, "d_model", "num_heads", source)
    defaults = {"num_decoder_layers": config["num_layers"], "d_kv": config["d_model"] // config["num_heads"],
                "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}  # fmt: skip
    arguments = {ours: config_int(config, theirs, source, default=defaults.get(theirs))
                 for theirs, ours in FIELDS.items()}  # fmt: skip
    return {
        **arguments,
        "dropout": config_float(config, "dropout_rate", source, default=0.1),
        "activation": ACTIVATIONS[activation],
        "use_gated_activation": gated,
        "layer_norm_epsilon": config_float(config, "layer_norm_epsilon", source, default=1e-6),
    }


def t5_dimensions(config: dict, arguments: dict) -> tuple[dict, list]:
    """``(dimensions, layers)`` of ``common.check_dimensions`` for a checked ``T5Config``."""
    d_model, heads = ("d_model", config["d_model"]), ("num_heads", config["num_heads"])
    wi = "wi_0" if arguments["use_gated_activation"] else "wi"
    attention = "encoder.block.0.layer.0.SelfAttention"
    return {
        "shared.weight": (("vocab_size", config["vocab_size"]), d_model),
        f"encoder.block.0.layer.1.DenseReluDense.{wi}.weight": (("d_ff", config["d_ff"]), d_model),
        f"{attention}.q.weight": (("num_heads x d_kv", config["num_heads"] * arguments["key_value_dim"]), d_model),
        f"{attention}.relative_attention_bias.weight": (
            ("relative_attention_num_buckets", arguments["num_buckets"]), heads),
    }, [("encoder.block.", "num_layers", config["num_layers"]),
        ("decoder.block.", "num_decoder_layers", arguments["num_decoder_layers"])]


def scales_output(config: dict) -> bool:
    """Whether the checkpoint rescales the decoder output by ``d_model ** -0.5`` (T5 1.0).

    transformers 5 writes ``scale_decoder_outputs``; older configs say it through
    ``tie_word_embeddings`` (absent means tied, as in T5 1.0).
    """
    if "scale_decoder_outputs" in config:
        return bool(config["scale_decoder_outputs"])
    return config.get("tie_word_embeddings", True) is not False


def t5_config(model) -> dict:
    """The Hugging Face ``T5Config`` of a ``T5`` (a ``T5ForConditionalGeneration``)."""
    a = model.arguments
    activation = hf_activation(a["activation"])
    if a["use_gated_activation"]:
        if activation not in ("gelu_new", "relu"):
            raise CheckpointError(
                f"a gated {a['activation']!r} feed-forward has no Hugging Face name; save_hf writes gated "
                "'gelu_approximate' ('gated-gelu') and gated 'relu'."
            )
        projection = "gated-gelu" if activation == "gelu_new" else "gated-relu"
    else:
        projection = activation
    tied = a["tie_embeddings"]
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        **{theirs: a[ours] for theirs, ours in FIELDS.items()},
        "feed_forward_proj": projection,
        "dropout_rate": a["dropout"],
        "layer_norm_epsilon": a["layer_norm_epsilon"],
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "tie_word_embeddings": tied,
        "scale_decoder_outputs": tied,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


def _attention(key, attention):
    return [
        Tensor.linear(f"{key}.q.weight", attention.query_dense.kernel),
        Tensor.linear(f"{key}.k.weight", attention.key_dense.kernel),
        Tensor.linear(f"{key}.v.weight", attention.value_dense.kernel),
        Tensor.linear(f"{key}.o.weight", attention.output_dense.kernel),
    ]


def _feed_forward(key, block):
    if block.ffn_gate is None:
        dense = [("wi", block.ffn_intermediate), ("wo", block.ffn_output)]
    else:
        dense = [("wi_0", block.ffn_intermediate), ("wi_1", block.ffn_gate), ("wo", block.ffn_output)]
    return [Tensor.linear(f"{key}.DenseReluDense.{name}.weight", layer.kernel) for name, layer in dense]


def t5_table(model) -> list[Tensor]:
    """The ``T5ForConditionalGeneration`` tensors of a ``T5`` (``lm_head.weight`` when untied)."""
    table = [Tensor("shared.weight", model.token_embedding.embeddings)]
    for side, blocks in (("encoder", model.encoder_blocks), ("decoder", model.decoder_blocks)):
        for i, block in enumerate(blocks):
            key = f"{side}.block.{i}.layer"
            table += [
                *_attention(f"{key}.0.SelfAttention", block.self_attention),
                Tensor(f"{key}.0.layer_norm.weight", block.self_attention_norm.scale),
            ]
            if block.position_bias is not None:
                table.append(Tensor(f"{key}.0.SelfAttention.relative_attention_bias.weight",
                                    block.position_bias.embeddings))
            ffn = 1
            if block.cross_attention is not None:
                table += [
                    *_attention(f"{key}.1.EncDecAttention", block.cross_attention),
                    Tensor(f"{key}.1.layer_norm.weight", block.cross_attention_norm.scale),
                ]
                ffn = 2
            table += [*_feed_forward(f"{key}.{ffn}", block),
                      Tensor(f"{key}.{ffn}.layer_norm.weight", block.ffn_norm.scale)]
        table.append(Tensor(f"{side}.final_layer_norm.weight", (model.encoder_norm if side == "encoder" else
                                                                 model.decoder_norm).scale))
    if not model.arguments["tie_embeddings"]:  # Keras (hidden, vocab); a PyTorch Linear (vocab, hidden)
        table.append(Tensor.linear("lm_head.weight", model.token_embedding.reverse_embeddings))
    return table


def load(directory: pathlib.Path, config: dict, header: dict, build, source):
    """Build the ``T5`` of a Hugging Face T5 directory and load every weight.

    Args:
        directory: the checkpoint directory (named in errors).
        config: its ``config.json``.
        header: its ``model.safetensors`` header (``common.read_header``), checked against
            the config before any tensor is read or the model built.
        build: ``build("t5", arguments, source)`` -> a ``T5``, as in ``huggingface.load``.
        source: the weights file, named in errors.
    """
    config_path = directory / "config.json"
    arguments = t5_arguments(config, config_path)
    dimensions, layers = t5_dimensions(config, arguments)
    if "shared.weight" not in header and "encoder.embed_tokens.weight" in header:  # the encoder's copy only
        header = {**header, "shared.weight": header["encoder.embed_tokens.weight"]}
    check_dimensions(header, dimensions, layers, weights=source, config=config_path)
    check_float(header, source)
    tensors = read_tensors(source, {k: v for k, v in header.items() if k not in IGNORED})
    shared = tensors.get("shared.weight")
    for key in TIED_COPIES:  # must be the shared embedding itself
        if key in tensors and shared is not None and not np.array_equal(tensors.pop(key), shared):
            raise CheckpointError(f"{source}: {key!r} differs from 'shared.weight'; T5 shares one embedding.")
    head = tensors.get("lm_head.weight")
    separate_head = head is not None and not np.array_equal(head, tensors.get("shared.weight"))
    if scales_output(config):
        if separate_head:
            raise CheckpointError(
                f"{source}: 'lm_head.weight' differs from 'shared.weight' but {directory / 'config.json'} ties them "
                "(tie_word_embeddings/scale_decoder_outputs): bigkeras' T5 rescales only a tied head."
            )
        tensors.pop("lm_head.weight", None)
        model = build("t5", {**arguments, "tie_embeddings": True}, directory)
    else:
        if head is None and "shared.weight" in tensors:  # transformers 5's tied, unscaled head
            tensors["lm_head.weight"] = tensors["shared.weight"]
        model = build("t5", {**arguments, "tie_embeddings": False}, directory)
    assign(t5_table(model), tensors, source=source, ignored=IGNORED)
    return model


def save(model) -> tuple[dict, dict]:
    """``(config, tensors)`` of a ``T5`` as a Hugging Face ``T5ForConditionalGeneration``."""
    return t5_config(model), export(t5_table(model))
