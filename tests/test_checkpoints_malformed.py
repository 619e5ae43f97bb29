"""Malformed checkpoints, one row each: every one raises ``CheckpointError`` naming its file and
field or tensor, before a model is built, and the huge-config rows stay under a memory bound.

Each row copies a small, valid checkpoint this module writes (a Hugging Face BERT, GPT-2 and
T5 directory, a keras-hub preset, a LoRA adapter file, an ``.h5`` file), breaks one thing in
the copy, loads it and matches the error. The rows marked ``huge`` claim a model of gigabytes
in a config of a few bytes; a child process runs them and reports its peak RSS
(``resource.getrusage``) before and after them: the rows may add at most ``ROW_GROWTH_BOUND``.
(The child's resident set after importing TensorFlow and Keras, about 1.05 GiB, varies by
machine and is not what is under test.)

    python tests/test_checkpoints_malformed.py BASES_DIR   # the child: huge rows, prints JSON
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROW_GROWTH_BOUND = 128 << 20  # what the huge rows may add to the child's RSS after its imports


@dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        name: the row's id.
        base: the valid checkpoint it starts from (a key of the ``bases`` fixture).
        mutate: ``mutate(path)`` breaks the copy (``path``: its directory or file).
        message: a regular expression the error message must match.
        file: the file name the message must name.
        load: ``"model"`` (``load_model``), ``"tokenizer"``, ``"adapters"`` or ``"h5"``.
        huge: whether the row's config claims a model far larger than memory allows.
    """

    name: str
    base: str
    mutate: Callable[[Path], None]
    message: str
    file: str
    load: str = "model"
    huge: bool = False


# Mutations
# ---------------------------------------------------------------------------------------
def _config(field=None, value=None, drop=None, name="config.json"):
    """Set (or ``drop``) one field of a JSON file."""

    def mutate(path):
        config = json.loads((path / name).read_text())
        if drop:
            del config[drop]
        else:
            config[field] = value
        (path / name).write_text(json.dumps(config))

    return mutate


def _preset_field(field, value):
    def mutate(path):
        config = json.loads((path / "config.json").read_text())
        config["config"][field] = value
        (path / "config.json").write_text(json.dumps(config))

    return mutate


def _write(name, content: bytes | str):
    def mutate(path):
        target = path / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())

    return mutate


def _remove(name):
    return lambda path: (path / name).unlink()


def _tensors(edit, name="model.safetensors", metadata_edit=None):
    """Rewrite a safetensors file with ``edit(tensors)`` (and ``metadata_edit(metadata)``)."""

    def mutate(path):
        from safetensors import safe_open
        from safetensors.numpy import load_file, save_file

        target = path / name if path.is_dir() else path
        with safe_open(str(target), "np") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(target))
        edit(tensors)
        if metadata_edit:
            metadata_edit(metadata)
        save_file(tensors, str(target), metadata=metadata)

    return mutate


def _raw(edit, name="model.safetensors"):
    """Rewrite a safetensors file's bytes: ``edit(header_length, header, data) -> bytes``."""

    def mutate(path):
        target = path / name if path.is_dir() else path
        raw = target.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        target.write_bytes(edit(length, raw[8 : 8 + length], raw[8 + length :]))

    return mutate


def _set(key, value):
    return lambda tensors: tensors.__setitem__(key, value)


def _header_shape(key, shape):
    """A header that declares ``shape`` for ``key`` without the bytes to back it."""

    def edit(length, header, data):
        parsed = json.loads(header)
        parsed[key]["shape"] = shape
        text = json.dumps(parsed).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + data

    return edit


def _metadata(field, value):
    return _tensors(lambda t: None, metadata_edit=lambda m: m.__setitem__(field, value))


def _lora(**changes):
    def edit(metadata):
        metadata["lora"] = json.dumps({**json.loads(metadata["lora"]), **changes})

    return _tensors(lambda t: None, metadata_edit=edit)


def _first_adapter(edit):
    def change(tensors):
        key = sorted(k for k in tensors if k.endswith("lora_kernel_a"))[0]
        tensors[key] = edit(tensors[key])

    return _tensors(change)


QUERY = "encoder.layer.0.attention.self.query.weight"
CASES = [
    # config.json
    Case("config_missing", "bert", _remove("config.json"), r"has no config\.json", "bert"),
    Case("config_binary", "bert", _write("config.json", b"\x89PNG\r\n\x1a\n\xff\xfe"), r"is not a text file",
         "config.json"),
    Case("config_not_json", "bert", _write("config.json", "{model_type: bert"), r"is not valid JSON", "config.json"),
    Case("config_a_list", "bert", _write("config.json", "[1, 2]"), r"holds a JSON array; it must hold a JSON object",
         "config.json"),
    Case("bert_field_missing", "bert", _config(drop="num_hidden_layers"),
         r"lacks the field 'num_hidden_layers' \(an integer\)", "config.json"),
    Case("gpt2_field_missing", "gpt2", _config(drop="n_embd"), r"lacks the field 'n_embd'", "config.json"),
    Case("t5_field_missing", "t5", _config(drop="d_ff"), r"lacks the field 'd_ff'", "config.json"),
    Case("field_a_string", "bert", _config("hidden_size", "32"), r"hidden_size='32' must be an integer", "config.json"),
    Case("field_a_bool", "bert", _config("num_attention_heads", True), r"num_attention_heads=True must be an integer",
         "config.json"),
    Case("field_zero", "bert", _config("intermediate_size", 0), r"intermediate_size=0 is out of range", "config.json"),
    Case("heads_do_not_divide", "bert", _config("num_attention_heads", 5), r"num_attention_heads=5 must divide "
         r"hidden_size=32", "config.json"),
    Case("dropout_out_of_range", "bert", _config("hidden_dropout_prob", 7), r"hidden_dropout_prob=7 must be a number "
         r"between 0\.0 and 1\.0", "config.json"),
    Case("vocab_10_to_the_12", "bert", _config("vocab_size", 10**12), r"vocab_size=1000000000000 is out of range",
         "config.json", huge=True),
    # Within the field limit but not what the weights hold: caught on the header, before building.
    Case("vocab_2_to_the_24", "bert", _config("vocab_size", 2**24), r"says vocab_size=16777216, hidden_size=32, so "
         r"'embeddings\.word_embeddings\.weight' should have shape \(16777216, 32\); .*holds \(64, 32\)",
         "model.safetensors", huge=True),
    Case("layers_100000", "bert", _config("num_hidden_layers", 100_000), r"says num_hidden_layers=100000; .* holds "
         r"2 block\(s\)", "model.safetensors", huge=True),
    Case("gpt2_positions_4m", "gpt2", _config("n_positions", 2**22), r"n_positions=4194304.*'wpe\.weight'",
         "model.safetensors", huge=True),
    Case("t5_d_ff_10m", "t5", _config("d_ff", 10**7), r"d_ff=10000000.*DenseReluDense\.wi\.weight", "model.safetensors",
         huge=True),
    Case("t5_decoder_layers_50000", "t5", _config("num_decoder_layers", 50_000), r"says num_decoder_layers=50000",
         "model.safetensors", huge=True),
    # model.safetensors
    Case("weights_missing", "bert", _remove("model.safetensors"), r"model\.safetensors does not exist",
         "model.safetensors"),
    Case("truncated_safetensors", "bert", lambda p: (p / "model.safetensors").write_bytes(
        (p / "model.safetensors").read_bytes()[:-100]), r"not a readable safetensors file: .*incomplete metadata",
        "model.safetensors"),
    Case("header_lies_about_its_size", "bert", _raw(lambda n, h, d: struct.pack("<Q", n + 4096) + h + d),
         r"not a readable safetensors file: Error while deserializing header", "model.safetensors"),
    Case("header_length_absurd", "bert", _raw(lambda n, h, d: struct.pack("<Q", 2**62) + h + d),
         r"not a readable safetensors file: .*header too large", "model.safetensors"),
    Case("header_shape_without_bytes", "bert", _raw(_header_shape(QUERY, [2**20, 2**20])),
         r"not a readable safetensors file: .*invalid shape, data type, or offset", "model.safetensors", huge=True),
    Case("header_not_json", "bert", _raw(lambda n, h, d: struct.pack("<Q", 16) + b"{not json at all" + d),
         r"not a readable safetensors file", "model.safetensors"),
    Case("tensor_int32", "bert", _tensors(_set(QUERY, np.ones((32, 32), "int32"))),
         r"tensor 'encoder\.layer\.0\.attention\.self\.query\.weight' has dtype I32", "model.safetensors"),
    Case("tensor_bool", "gpt2", _tensors(_set("transformer.h.0.ln_1.weight", np.ones(32, bool))),
         r"'transformer\.h\.0\.ln_1\.weight' has dtype BOOL", "model.safetensors"),
    Case("tensor_twice", "gpt2", _tensors(_set("h.0.ln_1.weight", np.ones(32, "float32"))),
         r"holds the tensor 'h\.0\.ln_1\.weight' twice", "model.safetensors"),
    Case("tensor_shape_disagrees_with_config", "bert",
         _tensors(_set("embeddings.word_embeddings.weight", np.zeros((65, 32), "float32"))),
         r"should have shape \(64, 32\); .*holds \(65, 32\)", "model.safetensors"),
    Case("dimension_tensor_missing", "bert", _tensors(lambda t: t.pop("embeddings.position_embeddings.weight")),
         r"lacks the tensor 'embeddings\.position_embeddings\.weight', whose shape sets max_position_embeddings=16",
         "model.safetensors"),
    Case("gpt2_lm_head_differs", "gpt2", _tensors(_set("lm_head.weight", np.ones((64, 32), "float32"))),
         r"'lm_head\.weight' differs from 'wte\.weight'", "model.safetensors"),
    # tokenizer files
    Case("tokenizer_json_not_json", "bert", _write("tokenizer.json", "{oops"), r"tokenizer\.json is not valid JSON",
         "tokenizer.json", load="tokenizer"),
    Case("tokenizer_json_binary", "bert", _write("tokenizer.json", b"\xff\xfe\x00{"), r"is not a text file",
         "tokenizer.json", load="tokenizer"),
    Case("tokenizer_config_a_list", "bert", lambda p: (_remove("tokenizer.json")(p), _write(
        "tokenizer_config.json", "[]")(p)), r"holds a JSON array", "tokenizer_config.json", load="tokenizer"),
    Case("vocab_txt_binary", "bert", _write("vocab.txt", b"[PAD]\n\xff\xfe\n"), r"is not a UTF-8 text file",
         "vocab.txt", load="tokenizer"),
    Case("vocab_json_not_json", "gpt2", _write("vocab.json", "{'a': 1"), r"vocab\.json is not valid JSON",
         "vocab.json", load="tokenizer"),
    Case("vocab_json_ids_not_ints", "gpt2", _write("vocab.json", '{"a": "one"}'), r"token 'a' has id 'one'",
         "vocab.json", load="tokenizer"),
    Case("merges_malformed", "gpt2", _write("merges.txt", "#version: 0.2\nabc\n"), r"merge rule 'abc' is not two "
         r"tokens", "merges.txt", load="tokenizer"),
    Case("sentencepiece_garbage", "t5", _write("spiece.model", b"\x00\x01 not a protobuf"),
         r"is not a usable SentencePiece model", "spiece.model", load="tokenizer"),
    # LoRA adapter files: checked before the model changes
    Case("adapters_not_adapters", "adapters", _metadata("format", "pt"), r"is not a bigkeras LoRA adapter file",
         "adapters.safetensors", load="adapters"),
    Case("adapters_lora_not_json", "adapters", _metadata("lora", "{rank: 4"), r"metadata field 'lora' is not valid "
         r"JSON", "adapters.safetensors", load="adapters"),
    Case("adapters_rank_unbounded", "adapters", _lora(rank=10**9), r"lora\.rank=1000000000 exceeds 8",
         "adapters.safetensors", load="adapters", huge=True),
    Case("adapters_rank_not_int", "adapters", _lora(rank="4"), r"lora\.rank='4' must be a positive integer",
         "adapters.safetensors", load="adapters"),
    Case("adapters_unknown_target", "adapters", _lora(targets=["queries"]), r"lora\.targets names \['queries'\]",
         "adapters.safetensors", load="adapters"),
    Case("adapters_tensor_shape", "adapters", _first_adapter(lambda a: np.zeros((*a.shape[:-1], 5), "float32")),
         r"has shape \(32, 4, 5\), the model's \(32, 4, 4\)", "adapters.safetensors", load="adapters"),
    Case("adapters_tensor_int", "adapters", _first_adapter(lambda a: a.astype("int32")), r"has dtype I32",
         "adapters.safetensors", load="adapters"),
    Case("adapters_truncated", "adapters", lambda p: p.write_bytes(p.read_bytes()[:-64]),
         r"not a readable safetensors file", "adapters.safetensors", load="adapters"),
    # keras-hub presets
    Case("preset_vocabulary_16m", "preset", _preset_field("vocabulary_size", 2**24), r"describes a model of at least "
         r"536,877,568 parameters .*holds 18,752", "config.json", huge=True),
    Case("preset_field_a_float", "preset", _preset_field("num_layers", 2.5), r"field 'config'\): num_layers=2\.5 must "
         r"be an integer", "config.json"),
    Case("preset_weights_corrupt", "preset", _write("model.weights.h5", b"not hdf5 at all"), r"is not a readable HDF5 "
         r"weights file", "model.weights.h5"),
    # keras.applications .h5
    Case("h5_not_hdf5", "h5", lambda p: p.write_bytes(b"\x00" * 64), r"is not a readable HDF5 weights file",
         "resnet50.h5", load="h5"),
]


# Loading
# ---------------------------------------------------------------------------------------
def build_bases(root: Path) -> dict[str, Path]:
    """Write the valid checkpoints every row starts from; returns name -> path."""
    import keras
    import keras_hub

    from bigkeras import checkpoints
    from bigkeras.models.bert import bert_backbone
    from bigkeras.models.gpt import gpt
    from bigkeras.models.t5 import PRESETS, t5

    keras.utils.set_random_seed(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "great"]
    bert_tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=words, lowercase=True)
    checkpoints.save_hf(bert_backbone(vocab_size=64, num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=48,
                                      sequence_length=16, dropout=0.0), root / "bert", tokenizer=bert_tokenizer)
    (root / "bert" / "tokenizer.json").write_text(json.dumps({"normalizer": {"type": "BertNormalizer"}}))
    gpt_tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary={"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3},
                                                   merges=["a b"])
    checkpoints.save_hf(gpt(vocab_size=64, sequence_length=16, num_layers=2, hidden_dim=32, num_heads=4,
                            intermediate_dim=128), root / "gpt2", tokenizer=gpt_tokenizer)
    checkpoints.save_hf(t5(**PRESETS["tiny"]), root / "t5")
    (root / "t5" / "spiece.model").write_bytes(b"")  # replaced by each tokenizer row
    keras_hub.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48,
                                  max_sequence_length=16).save_to_preset(str(root / "preset"))
    classifier = checkpoints.load_model(root / "bert", num_classes=2)
    _backbone(classifier).enable_lora(4)
    checkpoints.save_adapters(classifier, root / "adapters.safetensors")
    (root / "resnet50.h5").write_bytes(b"")  # replaced by its row
    return {"bert": root / "bert", "gpt2": root / "gpt2", "t5": root / "t5", "preset": root / "preset",
            "adapters": root / "adapters.safetensors", "h5": root / "resnet50.h5"}


def _backbone(model):
    from bigkeras.models.base import transformer_backbones

    return transformer_backbones(model)[0]


def copy(case: Case, bases: dict[str, Path], work: Path) -> Path:
    """A copy of the row's base checkpoint in ``work``, broken by the row's mutation."""
    source = bases[case.base]
    target = work / case.name / source.name
    target.parent.mkdir(parents=True)
    (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    case.mutate(target)
    return target


def load(case: Case, path: Path, bases: dict[str, Path]):
    """Load the broken copy as the row says; returns the model the adapters row loads into."""
    from bigkeras import checkpoints

    if case.load == "tokenizer":
        return checkpoints.load_tokenizer(path)
    if case.load == "h5":
        return checkpoints.load_model(path, arch="ResNet50", include_top=False)
    if case.load == "adapters":
        model = checkpoints.load_model(bases["bert"], num_classes=2)
        try:
            checkpoints.load_adapters(model, path)
        finally:
            # Nothing changed: no adapters, every backbone weight still trainable.
            assert _backbone(model).lora is None and not _backbone(model).lora_layers
            assert len(model.trainable_weights) == len(model.weights)
        return model
    return checkpoints.load_model(path)


# Tests
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return build_bases(tmp_path_factory.mktemp("bases"))


def test_the_table_covers_every_kind_of_input():
    assert len(CASES) >= 20 and len({c.name for c in CASES}) == len(CASES)
    assert {c.base for c in CASES} == {"bert", "gpt2", "t5", "preset", "adapters", "h5"}
    assert {c.load for c in CASES} == {"model", "tokenizer", "adapters", "h5"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_raises_a_named_error_before_building(case, bases, tmp_path, monkeypatch):
    from bigkeras import checkpoints
    from bigkeras.checkpoints import CheckpointError

    built = []
    builder = checkpoints._builder
    monkeypatch.setattr(checkpoints, "_builder", lambda overrides: lambda *a: built.append(a) or builder(overrides)(*a))
    path = copy(case, bases, tmp_path)
    with pytest.raises(CheckpointError) as raised:
        load(case, path, bases)
    message = str(raised.value)
    assert case.file in message, message
    assert __import__("re").search(case.message, message), message
    if case.load == "model" and case.base != "adapters":
        assert built == [], f"{case.name}: the model was built before the error"


@pytest.mark.processes
def test_huge_configs_stay_under_the_memory_bound(bases, tmp_path):
    huge = [c.name for c in CASES if c.huge]
    assert len(huge) >= 6
    root = bases["bert"].parent
    done = subprocess.run([sys.executable, __file__, str(root), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report["errors"]) == sorted(huge)
    assert all(error == "CheckpointError" for error in report["errors"].values()), report["errors"]
    # The rows allocate next to nothing: a model of gigabytes is refused before it is built.
    assert report["peak_rss_bytes"] - report["baseline_rss_bytes"] < ROW_GROWTH_BOUND, report
    print(f"huge rows: peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB "
          f"(after imports {report['baseline_rss_bytes'] / 2**20:.0f} MiB)")


def _child(root: Path, work: Path) -> None:
    """Run every huge row in this process and print ``{"errors", "peak_rss_bytes", ...}`` as JSON."""
    import keras  # noqa: F401 - imports counted in the baseline, not in the rows

    from bigkeras import checkpoints  # noqa: F401

    bases = {"bert": root / "bert", "gpt2": root / "gpt2", "t5": root / "t5", "preset": root / "preset",
             "adapters": root / "adapters.safetensors", "h5": root / "resnet50.h5"}
    checkpoints.load_model(bases["bert"], num_classes=2)  # the adapters rows' model, built once here too
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    errors = {}
    for case in (c for c in CASES if c.huge):
        try:
            load(case, copy(case, bases, work), bases)
            errors[case.name] = None
        except Exception as error:  # noqa: BLE001 - reported to the parent
            errors[case.name] = type(error).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"errors": errors, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
