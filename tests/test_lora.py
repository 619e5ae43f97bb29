"""LoRA through the harness, adapter checkpoints, merged and int8 exports."""

import gc
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from bigkeras import checkpoints
from bigkeras.checkpoints import CheckpointError
from bigkeras.models.bert import BertBackbone, bert_backbone, bert_classifier
from bigkeras.models.gpt import gpt
from bigkeras.serving import export_saved_model, preprocessed_text_signatures, publish_saved_model
from bigkeras.serving.deploy import deployable
from bigkeras.training import TrainConfig, train
from tests.cluster import PYTHON

SHAPE = {"vocab_size": 64, "num_layers": 2, "hidden_dim": 32, "num_heads": 4, "intermediate_dim": 48,
         "sequence_length": 16, "dropout": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny 'published' BERT checkpoint: every test starts from the same weights."""
    keras.utils.set_random_seed(7)
    return checkpoints.save_hf(bert_backbone(**SHAPE), tmp_path_factory.mktemp("base") / "bert")


def _dataset(n=256, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 64, size=(n, 12)).astype("int32")
    labels = (ids[:, 1] > 34).astype("int32")  # learnable from one token
    features = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return tf.data.Dataset.from_tensor_slices((features, labels)), features


@pytest.fixture(scope="module")
def lora_run(base_dir, tmp_path_factory):
    data, features = _dataset()
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=3e-3, lora_rank=4, tensorboard=False, verbose=0,
                         run_dir=str(tmp_path_factory.mktemp("run")))  # fmt: skip
    result = train(lambda: checkpoints.load_model(base_dir, num_classes=2, dropout=0.0), data, data, config)
    return result, features


def _backbone(model):
    return next(layer for layer in model.layers if isinstance(layer, BertBackbone))


def test_lora_trains_only_adapters_and_head_and_leaves_the_base_unchanged(lora_run, base_dir):
    result, features = lora_run
    model, backbone = result.model, _backbone(result.model)
    assert backbone.lora == {"rank": 4, "alpha": None, "targets": ["query", "value"]}
    assert len(backbone.lora_layers) == 4  # query and value of 2 blocks
    trainable = {v.path for v in model.trainable_weights}
    adapters = {v.path for v in backbone.adapter_weights()}
    assert adapters < trainable and all("logits" in p for p in trainable - adapters)
    assert sum(math.prod(v.shape) for v in model.trainable_weights) < 0.15 * model.count_params()
    assert result.history["loss"][-1] < result.history["loss"][0]
    fresh = checkpoints.load_model(base_dir)
    for before, after in zip(fresh.weights, backbone.base_weights()):
        assert np.array_equal(before.numpy(), after.numpy()), after.path


def test_adapters_round_trip_into_a_fresh_base_model(lora_run, base_dir, tmp_path):
    result, features = lora_run
    path = checkpoints.save_adapters(result.model, tmp_path / "adapters.safetensors")
    assert path.stat().st_size < 20_000  # adapters + head only; the base is ~100 KB
    fresh = checkpoints.load_adapters(checkpoints.load_model(base_dir, num_classes=2, dropout=0.0), path)
    assert np.abs(fresh.predict(features, verbose=0) - result.model.predict(features, verbose=0)).max() <= 1e-6


def test_adapters_refuse_a_different_base_or_rank(lora_run, base_dir, tmp_path):
    result, _ = lora_run
    path = checkpoints.save_adapters(result.model, tmp_path / "adapters.safetensors")
    keras.utils.set_random_seed(8)
    other = bert_classifier(backbone=bert_backbone(**SHAPE), num_classes=2)
    with pytest.raises(CheckpointError, match=r"was trained on base model 'bert' \(weights sha256 .*a different base"):
        checkpoints.load_adapters(other, path)
    ranked = checkpoints.load_model(base_dir, num_classes=2)
    _backbone(ranked).enable_lora(8)
    with pytest.raises(CheckpointError, match=r"holds LoRA \{'rank': 4.*already has LoRA \{'rank': 8"):
        checkpoints.load_adapters(ranked, path)
    with pytest.raises(CheckpointError, match=r"needs a model with LoRA enabled"):
        checkpoints.save_adapters(other, tmp_path / "none.safetensors")


def test_unknown_lora_target_lists_the_roles(base_dir):
    backbone = checkpoints.load_model(base_dir)
    with pytest.raises(ValueError, match=r"roles are query, key, value, attention_output, ffn"):
        backbone.enable_lora(4, targets=("queries",))
    with pytest.raises(ValueError, match=r"`lora_targets` must name at least one role"):
        TrainConfig(lora_rank=4, lora_targets=())


def test_lora_model_keras_file_round_trip(lora_run, tmp_path):
    result, features = lora_run
    result.model.save(tmp_path / "lora.keras")
    again = keras.saving.load_model(tmp_path / "lora.keras")
    assert _backbone(again).lora == _backbone(result.model).lora
    assert np.abs(again.predict(features, verbose=0) - result.model.predict(features, verbose=0)).max() <= 1e-5


def test_merged_export_has_no_lora_variables_and_equal_predictions(lora_run, tmp_path):
    result, features = lora_run
    merged = deployable(result.model)
    assert merged is not result.model and not any("lora" in v.path for v in merged.weights)
    assert len(merged.weights) == len(result.model.weights) - 8
    assert np.abs(merged.predict(features, verbose=0) - result.model.predict(features, verbose=0)).max() <= 1e-5
    with pytest.raises(ValueError, match=r"`signatures` must be a function of the model"):
        export_saved_model(result.model, "lora", base_dir=tmp_path, signatures={})


@pytest.mark.slow  # exports twice and verifies each in a fresh process: about 25 s
def test_merged_and_int8_exports_verify_without_keras(lora_run, tmp_path):
    import keras_hub

    result, features = lora_run
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    preprocess = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocabulary), sequence_length=12
    )
    examples = ["w1 w2 w40", "w7 w50 w3 w3"]

    def signatures(model):
        return preprocessed_text_signatures(model, preprocess, class_names=["no", "yes"], examples=examples)

    published = [publish_saved_model(result.model, "lora", base_dir=tmp_path, signatures=signatures, quantize=q,
                                     max_batch_size=8)  # a warmup of 1 to 8 rows: the bounds are not under test
                 for q in (None, "int8")]  # each verified without Keras before it was published
    merged, int8 = (p.path for p in published)
    for path, report in ((p.path, p.report) for p in published):
        assert set(report.signatures) == {"serving_default"}
        names = tf.train.list_variables(str(path / "variables" / "variables"))
        assert not any("lora" in name for name, _ in names)
    loaded = {p: tf.saved_model.load(str(p)).signatures["serving_default"] for p in (merged, int8)}
    outputs = {p: f(text=tf.constant(examples))["logits"].numpy() for p, f in loaded.items()}
    float_logits = signatures(result.model)["serving_default"](text=tf.constant(examples))["logits"].numpy()
    assert np.abs(outputs[merged] - float_logits).max() <= 1e-5
    assert np.abs(outputs[int8] - float_logits).max() <= 0.05 * np.abs(float_logits).max() + 1e-3


def test_int8_copy_of_a_gpt_keeps_its_outputs_close():
    keras.utils.set_random_seed(9)
    model = gpt(vocab_size=64, sequence_length=16, num_layers=2, hidden_dim=64, num_heads=4, intermediate_dim=128)
    ids = np.random.default_rng(0).integers(1, 64, size=(2, 10)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    frozen = gc.get_freeze_count()  # tests/conftest.py freezes the heap after each module
    quantized = deployable(model, quantize="int8")
    assert gc.get_freeze_count() == frozen  # what it froze while Keras quantized is collectable again
    assert quantized is not model and model.blocks[0].ffn_output.kernel.dtype == "float32"
    assert quantized.blocks[0].ffn_output.quantization_mode == "int8"
    assert quantized.blocks[0].ffn_output.inputs_quantizer is None  # "int8": weights only, float compute
    assert model.blocks[0].ffn_output.quantization_mode is None  # the original is left as it was
    reference, approx = model(inputs).numpy(), quantized(inputs).numpy()
    assert np.abs(approx - reference).max() <= 0.05 * np.abs(reference).max()
    dynamic = deployable(model, quantize="int8_dynamic")  # Keras' int8 layers: activations quantized too
    assert dynamic.blocks[0].ffn_output.inputs_quantizer is not None
    assert np.abs(dynamic(inputs).numpy() - reference).max() <= 0.05 * np.abs(reference).max()
    with pytest.raises(ValueError, match=r"`quantize` must be one of"):
        deployable(model, quantize="int4")


MIRRORED = """
from bigkeras.training import configure_cpu_replicas
configure_cpu_replicas(2)
import json, sys
import keras, numpy as np, tensorflow as tf
from bigkeras.models.bert import BertBackbone, bert_backbone, bert_classifier
from bigkeras.training import TrainConfig, train
rng = np.random.default_rng(0)
ids = rng.integers(5, 64, size=(256, 12)).astype("int32")
features = {"token_ids": ids, "segment_ids": 0 * ids, "padding_mask": 0 * ids + 1}
data = tf.data.Dataset.from_tensor_slices((features, (ids[:, 1] > 34).astype("int32")))
def model():
    keras.utils.set_random_seed(1)
    backbone = bert_backbone(vocab_size=64, num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=48,
                             sequence_length=16, dropout=0.0)
    return bert_classifier(backbone=backbone, num_classes=2)
config = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, lora_rank=4, strategy="mirrored", cpu_replicas=2,
                     tensorboard=False, verbose=0, run_dir=sys.argv[1])
result = train(model, data, data, config)
backbone = next(layer for layer in result.model.layers if isinstance(layer, BertBackbone))
print(json.dumps({"replicas": result.model.distribute_strategy.num_replicas_in_sync, "loss": result.history["loss"],
                  "lora": backbone.lora, "trainable": [v.path for v in result.model.trainable_weights]}))
"""


@pytest.mark.slow  # a fresh process (the CPU split must come first): about 20 s
def test_lora_trains_under_mirrored_strategy_on_two_cpu_replicas(tmp_path):
    import subprocess

    proc = subprocess.run([PYTHON, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["replicas"] == 2 and run["lora"]["rank"] == 4
    assert run["loss"][-1] < run["loss"][0]
    assert all("lora_kernel" in p or "logits" in p for p in run["trainable"])
