"""Check one SavedModel export the way TF Serving sees it: no Keras, no bigkeras.

Run by ``bigkeras.serving.verify`` as a script in a fresh interpreter (never imported):

    python verify_child.py EXPORT_DIR EXPECTED_RECORDS ATOL RTOL

Keras, tf_keras and bigkeras are made unimportable before TensorFlow loads (``import
tensorflow`` otherwise imports Keras eagerly), so a graph that secretly needs Python-side
Keras code fails here as it would in TF Serving. Prints one JSON report on the last line.
"""

import glob
import importlib.util
import json
import os
import sys

BLOCKED = ("keras", "tf_keras", "bigkeras")
for _name in BLOCKED:
    sys.modules[_name] = None  # `import keras` now raises ImportError

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow.python.framework import op_def_registry  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")


def graph_ops(export_dir):
    """Every op type in the SavedModel's graph and function library."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    library = {fn.signature.name for m in saved.meta_graphs for fn in m.graph_def.library.function}
    return ops - library  # calls to library functions are not ops


def unregistered(ops):
    return sorted(op for op in ops if op_def_registry.get(op) is None)


def load_tensorflow_text_kernels():
    """Register TF Text's op kernels from its shared libraries, as TF Serving links them.

    ``import tensorflow_text`` would do it too, but its Python package builds Keras layers on
    import, and this process must not import Keras.
    """
    spec = importlib.util.find_spec("tensorflow_text")  # locates the package without running it
    if spec is None:
        raise ImportError("the graph needs TF Text ops, and tensorflow-text is not installed")
    libraries = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "python", "ops", "_*.so")))
    for library in libraries:
        tf.load_op_library(library)
    return [os.path.basename(p) for p in libraries]


def records(path):
    if not os.path.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def run(signature, request):
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    return {k: v.numpy() for k, v in signature(**inputs).items()}


def compare(name, got, want, atol, rtol):
    """A mismatch message, or None when ``got`` matches ``want``."""
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype.kind != want.dtype.kind:
        return f"{name}: got {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
    if want.dtype.kind == "f":
        if not np.allclose(got, want, atol=atol, rtol=rtol):
            return f"{name}: max abs difference {np.max(np.abs(got - want)):.3g} > atol {atol}"
    elif not np.array_equal(got, want):
        return f"{name}: {got.tolist()!r} != expected {want.tolist()!r}"
    return None


def spec_dict(spec):
    return {"dtype": spec.dtype.name, "shape": None if spec.shape.rank is None else list(spec.shape.as_list())}


def main(export_dir, expected_path, atol, rtol):
    report = {"path": export_dir, "mismatches": [], "errors": []}
    ops = graph_ops(export_dir)
    custom = unregistered(ops)
    report["non_core_ops"] = custom
    if custom:  # TF Text kernels (keras-hub tokenizers); TF Serving's standard build links them
        report["loaded_tensorflow_text_kernels"] = load_tensorflow_text_kernels()
        missing = unregistered(ops)
        if missing:
            report["errors"].append(f"ops registered by neither TensorFlow nor TF Text: {missing}")
            return report

    loaded = tf.saved_model.load(export_dir)
    signatures = dict(loaded.signatures)
    report["signatures"] = {
        name: {
            "inputs": {k: spec_dict(s) for k, s in sorted(fn.structured_input_signature[1].items())},
            "outputs": {k: spec_dict(s) for k, s in sorted(fn.structured_outputs.items())},
        }
        for name, fn in sorted(signatures.items())
    }

    checked = set()
    for log in records(expected_path):
        request, response = log.predict_log.request, log.predict_log.response
        name = request.model_spec.signature_name or "serving_default"
        if name not in signatures:
            report["errors"].append(f"expected outputs for a signature the export lacks: {name!r}")
            continue
        got = run(signatures[name], request)
        want = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        if set(got) != set(want):
            report["mismatches"].append(f"{name}: outputs {sorted(got)} != expected {sorted(want)}")
            continue
        for key in sorted(want):
            problem = compare(f"{name}/{key}", got[key], want[key], atol, rtol)
            if problem:
                report["mismatches"].append(problem)
        checked.add(name)
    report["parity_checked"] = sorted(checked)
    report["unchecked_signatures"] = sorted(set(signatures) - checked)

    # Warmup replay, as TF Serving does on load: every record must run.
    warmup = records(os.path.join(export_dir, WARMUP))
    report["warmup_records"] = len(warmup)
    for i, log in enumerate(warmup):
        request = log.predict_log.request
        name = request.model_spec.signature_name or "serving_default"
        try:
            run(signatures[name], request)
        except Exception as err:  # noqa: BLE001 (reported, not raised)
            report["errors"].append(f"warmup record {i} ({name}): {type(err).__name__}: {err}")

    # Proof for the report: no module of a blocked package was loaded.
    report["imported"] = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
    return report


if __name__ == "__main__":
    export_dir, expected_path, atol, rtol = sys.argv[1:5]
    print(json.dumps(main(export_dir, expected_path, float(atol), float(rtol))))
