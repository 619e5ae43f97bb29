"""Export for TF Serving: layout, signatures, parity without Keras, warmup, models.config, compatibility.

Hostile requests through the server's session path: ``test_serving_session.py``."""

import dataclasses
import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2

import bigkeras
from bigkeras.serving import (
    VerificationError,
    export_saved_model,
    image_classifier_signatures,
    read_model_config,
    read_warmup,
    text_classifier_signatures,
    verify,
    write_model_config,
    write_warmup,
)
from bigkeras.serving import compatibility
from bigkeras.serving.batching import unbatchable_inputs
from bigkeras.serving.bounds import bucket_sizes, load_bounds
from bigkeras.serving.config import model_server_config
from bigkeras.serving.signatures import gpt_signatures, traced

CLASSES = ["cat", "dog", "eel"]
SENTENCES = ["the caf\u00e9\u2019s \u201ccat\u201d sat on the mat",  # non-ASCII first: warmup and build use it
              "a dog ran in the park", "what a good movie", "a bad film"]
CLASSIFIER_OUTPUTS = {"logits": "float32", "probabilities": "float32", "class_id": "int32", "class_name": "string"}


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def classifier_expected(logits):
    logits = np.asarray(logits, np.float32)
    ids = logits.argmax(-1).astype(np.int32)
    return {"logits": logits, "probabilities": softmax(logits), "class_id": ids,
            "class_name": np.array([CLASSES[i].encode() for i in ids], dtype=object)}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A CNN, a raw-string text classifier and a GPT with `generate`, exported once."""
    base = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(0)
    out = {"base": base}

    cnn = bigkeras.build("cnn_tiny")
    images = np.random.default_rng(0).integers(0, 256, size=(3, *cnn.inputs[0].shape[1:]), dtype=np.uint8)
    out["cnn"] = cnn, images, export_saved_model(
        cnn, "cnn", base_dir=base, signatures=image_classifier_signatures(cnn, class_names=CLASSES, examples=images),
        verify=False,  # each test verifies against its own reference
    )

    text_model = bigkeras.build("transformer_tiny", num_classes=3)
    vectorizer = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=text_model.inputs[0].shape[1])
    vectorizer.adapt(SENTENCES)
    out["text"] = text_model, vectorizer, export_saved_model(
        text_model, "text", base_dir=base,
        signatures=text_classifier_signatures(text_model, vectorizer, class_names=CLASSES, examples=SENTENCES),
        verify=False,
    )

    gpt = bigkeras.build("gpt_tiny", vocab_size=256)
    tokenizer = keras_hub.tokenizers.ByteTokenizer()  # its lowercasing is a TF Text op
    out["gpt"] = gpt, tokenizer, export_saved_model(
        gpt, "gpt", base_dir=base, signatures=gpt_signatures(gpt, tokenizer, max_length=16, examples=["hi", "hello there"]),
        verify=False,
    )
    return out


def spec(dtype, shape):
    return {"dtype": dtype, "shape": shape}


def test_cnn_matches_keras_without_keras(exports):
    model, images, path = exports["cnn"]
    floats = images.astype(np.float32) / 255.0
    expected = classifier_expected(model.predict_on_batch(floats))
    encoded = np.array([tf.io.encode_png(i).numpy() for i in images], dtype=object)
    report = verify(path, expected={"serving_default": ({"images": floats}, expected),
                                    "serving_bytes": ({"image_bytes": encoded}, expected)}, atol=1e-5)
    assert report.imported == []  # no keras, tf_keras or bigkeras module in the child
    assert report.parity_checked == ["serving_bytes", "serving_default"]
    assert report.non_core_ops == []
    # Replayed in the child: each signature at every bucket row count (1, 2, 4, ... its row bound).
    assert report.warmup_records == 2 * len(bucket_sizes(load_bounds(path)["serving_bytes"]["max_rows"]))
    h, w, c = model.inputs[0].shape[1:]
    outputs = {"class_id": spec("int32", [None]), "class_name": spec("string", [None]),
               "logits": spec("float32", [None, 3]), "probabilities": spec("float32", [None, 3])}
    assert report.signatures == {
        "serving_default": {"inputs": {"images": spec("float32", [None, h, w, c])}, "outputs": outputs},
        "serving_bytes": {"inputs": {"image_bytes": spec("string", [None])}, "outputs": outputs},
    }


def test_text_classifier_takes_raw_strings(exports):
    model, vectorizer, path = exports["text"]
    texts = np.array(["the cat ran", "an unseen sentence entirely", ""], dtype=object)
    expected = classifier_expected(model.predict_on_batch(vectorizer(texts.astype(str))))
    report = verify(path, expected={"serving_default": ({"text": texts}, expected)})
    assert report.imported == []
    assert report.non_core_ops == []  # TextVectorization uses core ops only
    assert report.signatures["serving_default"]["inputs"] == {"text": spec("string", [None])}
    assert {k: v["dtype"] for k, v in report.signatures["serving_default"]["outputs"].items()} == CLASSIFIER_OUTPUTS


def test_gpt_generate_matches_naive_greedy_decoding(exports):
    model, tokenizer, path = exports["gpt"]
    prompts, new = ["hi", "hello there"], 5
    rows = []
    for prompt in prompts:  # greedy, uncached, unpadded: the whole model at every step
        ids = list(np.asarray(tokenizer(prompt)))
        for _ in range(new):
            x = np.array([ids], np.int32)
            logits = model.predict_on_batch({"token_ids": x, "padding_mask": np.ones_like(x)})
            ids.append(int(logits[0, -1].argmax()))
        rows.append(ids[-new:])
    completion_ids = np.array(rows, np.int32)
    completion = np.array([bytes(r).decode("utf-8", "replace").encode() for r in rows], dtype=object)
    inputs = {"prompt": np.array(prompts, dtype=object), "max_new_tokens": np.int32(new)}
    report = verify(path, expected={"generate": (inputs, {"completion": completion, "completion_ids": completion_ids})})
    assert report.imported == []
    assert report.non_core_ops == ["CaseFoldUTF8"]  # TF Text kernels, loaded without its Python package
    assert report.signatures["generate"] == {
        "inputs": {"max_new_tokens": spec("int32", []), "prompt": spec("string", [None])},
        "outputs": {"completion": spec("string", [None]), "completion_ids": spec("int32", [None, None])},
    }


def test_verify_reports_a_mismatch(exports):
    model, vectorizer, path = exports["text"]
    texts = np.array(["the cat"], dtype=object)
    wrong = classifier_expected(model.predict_on_batch(vectorizer(texts.astype(str))) + 1.0)
    with pytest.raises(VerificationError, match=r"serving_default/logits: max abs difference"):
        verify(path, expected={"serving_default": ({"text": texts}, wrong)})


def test_layout_is_versioned_and_atomic(exports, tmp_path):
    model = bigkeras.build("mlp_tiny")
    first = export_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, verify=False)
    second = export_saved_model(model, "mlp", base_dir=tmp_path, warmup=False, verify=False)
    assert (first.name, second.name) == ("1", "2")
    assert (second / "saved_model.pb").is_file() and (second / "variables").is_dir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_saved_model(model, "mlp", base_dir=tmp_path, version=1)
    export_saved_model(model, "mlp", base_dir=tmp_path, version=1, overwrite=True, warmup=False, verify=False)
    assert sorted(p.name for p in (tmp_path / "mlp").iterdir()) == ["1", "2"]  # no temp dirs left
    with pytest.raises(ValueError, match="`version` must be a positive integer"):
        export_saved_model(model, "mlp", base_dir=tmp_path, version=0)


def test_warmup_records_parse_and_replay(exports, tmp_path):
    records = read_warmup(exports["cnn"][2])
    assert all(isinstance(r, prediction_log_pb2.PredictionLog) for r in records)
    buckets = bucket_sizes(load_bounds(exports["cnn"][2])["serving_default"]["max_rows"])
    rows = {}
    for r in records:
        request = r.predict_log.request
        rows.setdefault(request.model_spec.signature_name, []).append(
            tf.make_ndarray(next(iter(request.inputs.values()))).shape[0])
    assert rows == {"serving_bytes": buckets, "serving_default": buckets}  # no row count meets the server first
    images = tf.make_ndarray(next(r for r in records if "images" in r.predict_log.request.inputs).predict_log.request.inputs["images"])
    np.testing.assert_allclose(images, exports["cnn"][1][:1] / 255.0, atol=1e-6)  # the real example images
    with pytest.raises(ValueError, match="at most 1000"):
        write_warmup(tmp_path, "m", [("serving_default", {"x": np.zeros((1, 2))})] * 1001)


def test_models_config_round_trips(exports):
    export_saved_model(exports["cnn"][0], "cnn", base_dir=exports["base"], warmup=False, verify=False)  # version 2
    path = write_model_config(exports["base"])
    config = read_model_config(path)
    assert config == model_server_config(exports["base"])
    assert text_format.Parse(path.read_text(), type(config)()) == config
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == ["cnn", "gpt", "text"]
    assert entries["cnn"].base_path == "/models/cnn"
    assert dict(entries["cnn"].version_labels) == {"stable": 2, "previous": 1}
    assert dict(entries["gpt"].version_labels) == {"stable": 1}
    assert entries["cnn"].model_version_policy.latest.num_versions == 2
    with pytest.raises(ValueError, match=r"`labels\['cnn'\]\['canary'\]` is version 7"):
        model_server_config(exports["base"], labels={"cnn": {"canary": 7}})


def test_exports_carry_their_compatibility_report_and_scalar_inputs_are_found(exports):
    cnn, gpt = exports["cnn"][2], exports["gpt"][2]
    stored = json.loads(compatibility.report_path(cnn).read_text())
    assert stored["minimum_release"] == "2.14" and stored["ops"]["tf_text"] == []
    assert compatibility.load_report(gpt)["ops"]["tf_text"] == ["CaseFoldUTF8"]
    # Server-side batching concatenates inputs along their first axis; a scalar has none.
    assert unbatchable_inputs(gpt) == ["generate/max_new_tokens", "serving_default/max_new_tokens"]  # Keras aliases it
    assert unbatchable_inputs(cnn) == []


def test_verify_runs_the_interpreter_that_bigkeras_verify_python_names(exports, tmp_path, monkeypatch):
    import sys

    _, _, path = exports["cnn"]
    marker = tmp_path / "ran"
    wrapper = tmp_path / "python"  # another environment's interpreter, as a user would name it
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" > {marker}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("BIGKERAS_VERIFY_PYTHON", str(wrapper))
    assert verify(path).imported == []  # the export's own expected outputs
    assert "verify_child.py" in marker.read_text()
    for bad in ("python3", str(tmp_path / "missing"), str(marker)):  # relative, absent, not executable
        monkeypatch.setenv("BIGKERAS_VERIFY_PYTHON", bad)
        with pytest.raises(ValueError, match="BIGKERAS_VERIFY_PYTHON=.* must be the absolute path of an executable"):
            verify(path)
    silent = tmp_path / "not-python"  # an executable that is no Python: exits 0 and prints nothing
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    monkeypatch.setenv("BIGKERAS_VERIFY_PYTHON", str(silent))
    with pytest.raises(VerificationError, match=r"printed no report; is .*not-python a Python with tensorflow\?"):
        verify(path)


def test_traced_signatures_trace_once_across_row_counts_and_export_the_same_answers(tmp_path):
    model = bigkeras.build("cnn_tiny")
    images = np.random.default_rng(3).integers(0, 256, size=(4, *model.inputs[0].shape[1:]), dtype=np.uint8)
    plain = image_classifier_signatures(model, class_names=CLASSES, examples=images)["serving_default"]
    traces = []

    def counting(images):  # Python runs only while tracing
        traces.append(1)
        return plain.fn(images=images)

    sig = traced({"serving_default": dataclasses.replace(plain, fn=counting)})["serving_default"]
    for rows in (4, 1, 3):
        got = sig(images=tf.constant(images[:rows], tf.float32))
        np.testing.assert_allclose(got["logits"].numpy(), model(images[:rows].astype("float32")).numpy(), atol=1e-5)
    assert len(traces) == 1
    export = export_saved_model(model, "traced", base_dir=tmp_path, signatures={"serving_default": sig})
    assert export.name == "1"  # export_saved_model verified it against the Keras model

    def renamed(pictures):
        return plain.fn(images=pictures)

    with pytest.raises(ValueError, match=r"takes \['pictures'\], but its inputs are \['images'\]"):
        traced({"s": dataclasses.replace(plain, fn=renamed)})
