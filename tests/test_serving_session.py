"""Exports run the way TF Serving runs them: a session, SignatureDef tensor names, the init op.

``verify`` loads with the TF1 loader and feeds and fetches by the SignatureDef's tensor names,
as the model server does; the Python object API (``tf.saved_model.load``) calls the restored
functions instead and misses a SignatureDef or an init op that the server would trip over.
Hostile requests go through the same session path, one export per signature kind.
"""

import pickle
import shutil
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import bigkeras
from bigkeras.data.packing import BertSingleSegmentPreprocessor
from bigkeras.models.bert import BACKBONE_PRESETS, bert_backbone
from bigkeras.serving import (
    VerificationError,
    embedding_signatures,
    export_saved_model,
    gpt_signatures,
    image_classifier_signatures,
    text_classifier_signatures,
    translate_signatures,
    verify,
)
from tests.session_requests import __file__ as SESSION_REQUESTS

VOCABULARY = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "fine", "film", "dull", "dog", "ran", "##s"]
SENTENCES = ["a dog ran in the park", "what a good movie", "a bad film", "the cat sat"]


def edit_saved_model(export_dir, edit):
    path = export_dir / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    edit(saved.meta_graphs[0])
    path.write_bytes(saved.SerializeToString())


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlp")
    return export_saved_model(bigkeras.build("mlp_tiny"), "mlp", base_dir=base)


def copy_of(export_dir, tmp_path):
    target = tmp_path / "mlp" / "1"
    shutil.copytree(export_dir, target)
    return target


def test_a_signature_def_naming_a_missing_tensor_fails_verify_but_not_the_object_api(mlp_export, tmp_path):
    path = copy_of(mlp_export, tmp_path)
    verify(path)  # the intact export passes
    edit_saved_model(path, lambda meta: meta.signature_def["serving_default"].outputs["logits"].__setattr__(
        "name", "StatefulPartitionedCall:7"))
    out = tf.saved_model.load(str(path)).signatures["serving_default"](inputs=tf.zeros((1, 8, 8)))
    assert "logits" in out  # the object API never reads the SignatureDef's tensor names
    with pytest.raises(VerificationError, match=r"'serving_default' output 'logits' names tensor 'StatefulPartitionedCall:7'"):
        verify(path)


def test_a_failing_init_op_fails_verify_but_not_the_object_api(mlp_export, tmp_path):
    path = copy_of(mlp_export, tmp_path)
    # The init op becomes the input placeholder: running it without a feed fails, as on the server.
    edit_saved_model(path, lambda meta: meta.signature_def["__saved_model_init_op"].outputs[
        "__saved_model_init_op"].__setattr__("name", "serving_default_inputs"))
    out = tf.saved_model.load(str(path)).signatures["serving_default"](inputs=tf.zeros((1, 8, 8)))
    assert "class_id" in out  # the object API does not run the SignatureDef's init op
    with pytest.raises(VerificationError, match=r"the session load \(restore \+ init op\) failed"):
        verify(path)


# ----------------------------------------------------------------------------- hostile requests


@pytest.fixture(scope="module")
def signature_kinds(tmp_path_factory):
    """One small export per signature kind: ``{kind: (export_dir, {name: Signature})}``."""
    base = tmp_path_factory.mktemp("hostile")
    keras.utils.set_random_seed(0)
    made = {}

    def export(kind, model, signatures):
        made[kind] = export_saved_model(model, kind, base_dir=base, signatures=signatures, verify=False), signatures

    cnn = bigkeras.build("cnn_tiny")
    export("image", cnn, image_classifier_signatures(cnn))
    text_model = bigkeras.build("transformer_tiny", num_classes=3)
    vectorizer = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=text_model.inputs[0].shape[1])
    vectorizer.adapt(SENTENCES)
    export("text", text_model, text_classifier_signatures(text_model, vectorizer, examples=SENTENCES))
    gpt = bigkeras.build("gpt_tiny", vocab_size=256)
    export("generate", gpt, gpt_signatures(gpt, keras_hub.tokenizers.ByteTokenizer(), max_length=16, examples=["hi"]))
    seq2seq = bigkeras.build("seq2seq_tiny", vocab_size=256)
    byte_tokenizer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)
    byte_tokenizer(tf.constant(["built"]))  # a recipe's tokenizer has tokenized its training data
    export("translate", seq2seq, translate_signatures(
        seq2seq, byte_tokenizer, source_length=8, target_length=6, start_token_id=2, end_token_id=3,
        examples=["4 mars 1998"]))
    backbone = bert_backbone(**{**BACKBONE_PRESETS["tiny"], "vocab_size": len(VOCABULARY)})
    preprocess = BertSingleSegmentPreprocessor(keras_hub.models.BertTokenizer(vocabulary=VOCABULARY), sequence_length=16)
    export("embed", backbone, embedding_signatures(backbone, preprocess, examples=["a fine film"]))
    return made


def strings(*values):
    return np.array(values, dtype=object)


ONE_MB = ("a dog ran " * 104858)[: 2**20].encode()  # 1 MiB of words
BAD_UTF8 = b"caf\xc3 \xff\xfe a dog"


def bounds_of(kinds, kind, signature):
    return kinds[kind][1][signature].bounds


def words(n_bytes):
    return ("a dog ran " * (n_bytes // 10 + 1))[:n_bytes].encode()


def png_bomb(side):
    """A blank ``side`` x ``side`` grey PNG, compressed row by row (never held whole): a few hundred KB."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []  # filter byte 0, then the pixels
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def jpeg_claiming(side):
    """A small real JPEG whose frame header (SOF0) claims ``side`` x ``side`` pixels."""
    data = bytearray(tf.io.encode_jpeg(np.zeros((16, 16, 1), np.uint8)).numpy())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    return bytes(data)


def hostile_cases(kinds):
    """``(case, export, signature, inputs, expect)``: expect "error", "answer" or "either"."""
    image = str(kinds["image"][0])
    _, h, w, c = kinds["image"][1]["serving_default"].inputs["images"].shape
    png = tf.io.encode_png(np.zeros((h, w, c), np.uint8)).numpy()
    big_png = tf.io.encode_png(tf.zeros((4000, 4000, c), tf.uint8)).numpy()
    cases = [
        ("image floats/good", image, "serving_default", {"images": np.zeros((2, h, w, c), np.float32)}, "answer"),
        ("image floats/wrong rank", image, "serving_default", {"images": np.zeros((h, w, c), np.float32)}, "error"),
        ("image floats/wrong dtype", image, "serving_default", {"images": np.zeros((1, h, w, c), np.int32)}, "error"),
        ("image floats/empty batch", image, "serving_default", {"images": np.zeros((0, h, w, c), np.float32)}, "either"),
        ("image floats/4000x4000", image, "serving_default", {"images": np.zeros((1, 4000, 4000, c), np.float32)}, "error"),
        ("image bytes/good", image, "serving_bytes", {"image_bytes": strings(png)}, "answer"),
        ("image bytes/wrong rank", image, "serving_bytes", {"image_bytes": np.array(png, dtype=object)}, "error"),
        ("image bytes/wrong dtype", image, "serving_bytes", {"image_bytes": np.zeros((1,), np.float32)}, "error"),
        ("image bytes/empty batch", image, "serving_bytes", {"image_bytes": strings()}, "either"),
        ("image bytes/not an image", image, "serving_bytes", {"image_bytes": strings(BAD_UTF8)}, "error"),
        ("image bytes/1 MB string", image, "serving_bytes", {"image_bytes": strings(ONE_MB)}, "error"),
        ("image bytes/4000x4000 PNG", image, "serving_bytes", {"image_bytes": strings(big_png)}, "answer"),
    ]
    # Just inside each bound: answered.
    image_rows = bounds_of(kinds, "image", "serving_default").max_rows
    side = int(bounds_of(kinds, "image", "serving_bytes").max_image_pixels ** 0.5)
    edge_png = tf.io.encode_png(tf.zeros((side, side, c), tf.uint8)).numpy()
    cases += [
        ("image floats/rows at the bound", image, "serving_default",
         {"images": np.zeros((image_rows, h, w, c), np.float32)}, "answer"),
        ("image floats/one row over", image, "serving_default",
         {"images": np.zeros((image_rows + 1, h, w, c), np.float32)}, "error"),
        ("image bytes/pixels at the bound", image, "serving_bytes", {"image_bytes": strings(edge_png)}, "answer"),
    ]
    for kind, signature, key in (("text", "serving_default", "text"), ("translate", "translate", "source"),
                                 ("embed", "embed", "text")):
        path = str(kinds[kind][0])
        cases += [
            (f"{kind}/good", path, signature, {key: strings(b"a dog ran")}, "answer"),
            (f"{kind}/wrong rank", path, signature, {key: np.array(b"a dog", dtype=object)}, "error"),
            (f"{kind}/wrong dtype", path, signature, {key: np.array([1], np.int32)}, "error"),
            (f"{kind}/empty batch", path, signature, {key: strings()}, "either"),
            (f"{kind}/invalid UTF-8", path, signature, {key: strings(BAD_UTF8)}, "either"),
            (f"{kind}/1 MB string", path, signature, {key: strings(ONE_MB)}, "error"),  # over max_string_bytes
            (f"{kind}/string at the bound", path, signature,
             {key: strings(words(bounds_of(kinds, kind, signature).max_string_bytes))}, "answer"),
        ]
    generate = str(kinds["generate"][0])

    def request(prompt, count):
        return {"prompt": prompt, "max_new_tokens": count}

    cases += [
        ("generate/good", generate, "generate", request(strings(b"hi"), np.array(3, np.int32)), "answer"),
        ("generate/wrong rank", generate, "generate", request(strings(b"hi"), np.array([3], np.int32)), "error"),
        ("generate/wrong dtype", generate, "generate", request(strings(b"hi"), np.array(3, np.int64)), "error"),
        ("generate/empty batch", generate, "generate", request(strings(), np.array(3, np.int32)), "either"),
        ("generate/invalid UTF-8", generate, "generate", request(strings(BAD_UTF8), np.array(3, np.int32)), "either"),
        ("generate/1 MB string", generate, "generate", request(strings(ONE_MB), np.array(3, np.int32)), "error"),
        ("generate/rows at the bound, longest completion", generate, "generate",
         request(strings(*[b"hi"] * bounds_of(kinds, "generate", "generate").max_rows), np.array(15, np.int32)), "answer"),
        ("translate/rows at the bound", str(kinds["translate"][0]), "translate",
         {"source": strings(*[b"4 mars 1998"] * bounds_of(kinds, "translate", "translate").max_rows)}, "answer"),
        ("generate/max_new_tokens 0", generate, "generate", request(strings(b"hi"), np.array(0, np.int32)), "error"),
        ("generate/max_new_tokens -1", generate, "generate", request(strings(b"hi"), np.array(-1, np.int32)), "error"),
        ("generate/max_new_tokens 2**31-1", generate, "generate",
         request(strings(b"hi"), np.array(2**31 - 1, np.int32)), "error"),
    ]
    return cases


def keras_answer(signature, inputs):
    return {k: np.asarray(v) for k, v in signature.fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


@pytest.mark.slow
def test_hostile_requests_get_an_error_or_a_correct_answer_and_the_server_goes_on(signature_kinds, tmp_path):
    cases = hostile_cases(signature_kinds)
    with open(tmp_path / "requests.pkl", "wb") as f:
        pickle.dump([case[:4] for case in cases], f)
    proc = subprocess.run([sys.executable, SESSION_REQUESTS, tmp_path / "requests.pkl", tmp_path / "results.pkl"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no crash: every request answered
    with open(tmp_path / "results.pkl", "rb") as f:
        results = pickle.load(f)

    by_path = {str(path): sigs for path, sigs in signature_kinds.values()}
    for case, path, signature, inputs, expect in cases:
        result = results[case]
        outcome = "answer" if "ok" in result else f"{result['error'][0]}: {result['error'][1].splitlines()[0][:120]}"
        print(f"{case}: {result['seconds']:.2f} s, {outcome}")  # the README's table: pytest -s -k hostile
        assert result["seconds"] < 20, (case, result["seconds"])
        if expect == "error":
            assert "error" in result and result["error"][0] == "InvalidArgumentError", (case, result)
            if "over" in case or "MB string" in case:
                assert "request bound" in result["error"][1], (case, result)  # the message names the bound
            if "wrong rank" in case:
                assert "is not compatible with expected shape" in result["error"][1], (case, result)
            if "max_new_tokens" in case:
                assert "max_new_tokens must be" in result["error"][1], (case, result)
        if expect == "answer":
            assert "ok" in result, (case, result)
        if "ok" in result:  # an answer must be the Keras model's answer
            want = keras_answer(by_path[path][signature], inputs)
            assert set(result["ok"]) == set(want), case
            for key, value in want.items():
                if value.dtype.kind == "f":
                    np.testing.assert_allclose(result["ok"][key], value, atol=1e-4, err_msg=f"{case}/{key}")
                else:
                    np.testing.assert_array_equal(result["ok"][key], value, err_msg=f"{case}/{key}")
        if not case.endswith("good"):
            assert "ok" in results[case + "/then good"], (case, results[case + "/then good"])


# ----------------------------------------------------------------------------- request bounds


def bomb_cases(kinds):
    """``(case, kind, signature, good inputs, hostile inputs, bound named)``: each over one bound."""
    _, h, w, c = kinds["image"][1]["serving_default"].inputs["images"].shape
    png = strings(tf.io.encode_png(np.zeros((h, w, c), np.uint8)).numpy())
    max_length = 16  # the generate export's
    many = 5000
    return [
        ("PNG bomb 16384x16384", "image", "serving_bytes", {"image_bytes": png},
         {"image_bytes": strings(png_bomb(16384))}, "pixels"),
        ("JPEG claiming 30000x30000", "image", "serving_bytes", {"image_bytes": png},
         {"image_bytes": strings(jpeg_claiming(30000))}, "pixels"),
        ("20,000 images", "image", "serving_default", {"images": np.zeros((1, h, w, c), np.float32)},
         {"images": np.zeros((20000, h, w, c), np.float32)}, "rows"),
        ("64 MB string", "text", "serving_default", {"text": strings(b"a dog ran")},
         {"text": strings(words(64 * 2**20))}, "bytes"),
        ("64 MB prompt", "generate", "generate", {"prompt": strings(b"hi"), "max_new_tokens": np.array(3, np.int32)},
         {"prompt": strings(words(64 * 2**20)), "max_new_tokens": np.array(3, np.int32)}, "bytes"),
        ("64 MB source", "translate", "translate", {"source": strings(b"4 mars 1998")},
         {"source": strings(words(64 * 2**20))}, "bytes"),
        (f"{many} prompts, longest completion", "generate", "generate",
         {"prompt": strings(b"hi"), "max_new_tokens": np.array(3, np.int32)},
         {"prompt": strings(*[b"hi there"] * many), "max_new_tokens": np.array(max_length - 1, np.int32)}, "rows"),
        (f"{many} sources", "translate", "translate", {"source": strings(b"4 mars 1998")},
         {"source": strings(*[b"4 mars 1998"] * many)}, "rows"),
    ]


@pytest.mark.slow
def test_bombs_are_refused_naming_the_bound_before_memory_grows(signature_kinds, tmp_path):
    """The hostile requests through the session path, one after another in one fresh process, each
    one's peak memory measured from the memory in use just before it (``session_requests.py``)."""
    cases = bomb_cases(signature_kinds)
    with open(tmp_path / "cases.pkl", "wb") as f:
        pickle.dump([(name, str(signature_kinds[kind][0]), signature, good, hostile)
                     for name, kind, signature, good, hostile, _ in cases], f)
    proc = subprocess.run([sys.executable, SESSION_REQUESTS, "--measure", tmp_path / "cases.pkl",
                           tmp_path / "results.pkl"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the process survived every request
    with open(tmp_path / "results.pkl", "rb") as f:
        measured = pickle.load(f)
    results = [measured[name] for name, *_ in cases]
    for (name, *_, bound), result in zip(cases, results):
        assert "error" in result, (name, result)
        kind, message = result["error"]
        assert kind == "InvalidArgumentError" and "request bound" in message and bound in message, (name, message)
        assert result["peak_growth_bytes"] < 0.5 * 2**30, (name, result["peak_growth_bytes"] / 2**20)
        assert result["seconds"] < 10, (name, result["seconds"])
        assert "ok" in result["first good"] and "ok" in result["then good"], (name, result)
        print(f"{name}: refused in {result['seconds']:.2f} s, peak memory "
              f"+{result['peak_growth_bytes'] / 2**20:.0f} MiB: {message.splitlines()[0][:160]}")
