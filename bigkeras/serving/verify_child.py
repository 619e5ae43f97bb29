"""Check one SavedModel export the way TF Serving runs it: no Keras, no bigkeras, a session.

Run by ``bigkeras.serving.verify`` as a script in a fresh interpreter (never imported):

    python verify_child.py EXPORT_DIR EXPECTED_RECORDS ATOL RTOL

TF Serving loads a SavedModel with the C++ loader into a session: it restores the variables,
runs the init op, and then serves each request by feeding and fetching the tensor names that
the request's SignatureDef lists, with the request's tensors exactly as sent (no conversion,
no shape check). This child does the same through the TF1 loader
(``tf.compat.v1.saved_model.loader.load``) and a session callable per signature, so a
SignatureDef that names a tensor the graph lacks, an init op that fails, or a dtype the
signature does not take fails here as it would on the server. The Python object API
(``tf.saved_model.load``) is not used: it calls the restored functions directly and never
reads the SignatureDef's tensor names.

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
from tensorflow.core.protobuf import config_pb2, saved_model_pb2  # noqa: E402
# Private, and listed in bigkeras.private_apis (checked there): TensorFlow has no public op-registry lookup.
from tensorflow.python.framework import op_def_registry  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")
INIT_OP_SIGNATURE = "__saved_model_init_op"  # a SignatureDef that only names the init op
SERVE_TAG = "serve"


def read_saved_model(export_dir):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return saved


def graph_ops(saved):
    """Every op type in the SavedModel's graphs and function libraries."""
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


def tensor_spec(info):
    """``{"dtype", "shape"}`` of a SignatureDef ``TensorInfo`` (shape None: unknown rank)."""
    shape = None if info.tensor_shape.unknown_rank else [None if d.size < 0 else d.size for d in info.tensor_shape.dim]
    return {"dtype": tf.as_dtype(info.dtype).name, "shape": shape}


class SessionSignature:
    """One SignatureDef run as TF Serving runs it: a session callable over its tensor names."""

    def __init__(self, session, name, signature_def):
        self.name = name
        self.inputs = dict(sorted(signature_def.inputs.items()))
        self.outputs = dict(sorted(signature_def.outputs.items()))
        self._session = session
        self._callables = {}

    def check_names(self):
        """Problems with the tensor names this SignatureDef lists (the graph must have them)."""
        problems = []
        for kind, infos in (("input", self.inputs), ("output", self.outputs)):
            for key, info in infos.items():
                if info.WhichOneof("encoding") != "name":
                    problems.append(f"signature {self.name!r} {kind} {key!r} is not a dense tensor ({info.WhichOneof('encoding')})")
                    continue
                try:
                    self._session.graph.get_tensor_by_name(info.name)
                except (KeyError, ValueError) as err:
                    problems.append(f"signature {self.name!r} {kind} {key!r} names tensor {info.name!r}, "
                                    f"which the graph lacks: {err}")
        return problems

    def run(self, inputs):
        """Feed ``{input key: ndarray}`` (dtype as given, like a request) and fetch every output."""
        unknown = sorted(set(inputs) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(inputs))
        if unknown or missing:
            raise ValueError(f"signature {self.name!r} takes inputs {sorted(self.inputs)}; "
                             f"the request has {sorted(inputs)}")
        keys = tuple(sorted(inputs))
        if keys not in self._callables:
            options = config_pb2.CallableOptions(
                feed=[self.inputs[k].name for k in keys], fetch=[self.outputs[k].name for k in self.outputs]
            )
            self._callables[keys] = self._session._make_callable_from_options(options)
        values = self._callables[keys](*(inputs[k] for k in keys))
        return dict(zip(self.outputs, values))


def load_session(export_dir):
    """``(session, {name: SessionSignature})``: restore variables and run the init op, as TF Serving does."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], export_dir)
    signatures = {
        name: SessionSignature(session, name, sig)
        for name, sig in sorted(meta.signature_def.items())
        if name != INIT_OP_SIGNATURE
    }
    return session, signatures


def request_inputs(request):
    return {k: tf.make_ndarray(v) for k, v in request.inputs.items()}


def compare(name, got, want, atol, rtol):
    """A mismatch message, or None when ``got`` matches ``want``."""
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype.kind != want.dtype.kind:
        return f"{name}: got {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
    if want.dtype.kind == "f":
        # Relative to the tensor's largest magnitude, not each element's: float32 rounding in a
        # fused graph grows with the values the computation went through (an untrained model's
        # logits near 2,000 differ by 1e-4 in a near-zero entry between Keras and the server).
        bound = atol + rtol * (float(np.max(np.abs(want))) if want.size else 0.0)
        difference = float(np.max(np.abs(got - want))) if want.size else 0.0
        if not difference <= bound:  # NaN fails too
            return (f"{name}: max abs difference {difference:.3g} > {bound:.3g} "
                    f"(atol {atol} + rtol {rtol} x max |expected|)")
    elif not np.array_equal(got, want):
        return f"{name}: {got.tolist()!r} != expected {want.tolist()!r}"
    return None


def main(export_dir, expected_path, atol, rtol):
    report = {"path": export_dir, "mismatches": [], "errors": [], "signatures": {}, "parity_checked": [],
              "unchecked_signatures": [], "warmup_records": 0}
    saved = read_saved_model(export_dir)
    ops = graph_ops(saved)
    report["ops"] = sorted(ops)
    custom = unregistered(ops)
    report["non_core_ops"] = custom
    if custom:  # TF Text kernels (keras-hub tokenizers); TF Serving's standard build links them
        report["loaded_tensorflow_text_kernels"] = load_tensorflow_text_kernels()
        missing = unregistered(ops)
        if missing:
            report["errors"].append(f"ops registered by neither TensorFlow nor TF Text: {missing}")
            return finish(report)

    try:
        _, signatures = load_session(export_dir)
    except Exception as err:  # noqa: BLE001 (the server's load would fail the same way)
        report["errors"].append(f"the session load (restore + init op) failed: {type(err).__name__}: {err}")
        return finish(report)
    report["signatures"] = {
        name: {"inputs": {k: tensor_spec(v) for k, v in sig.inputs.items()},
               "outputs": {k: tensor_spec(v) for k, v in sig.outputs.items()}}
        for name, sig in signatures.items()
    }
    for sig in signatures.values():
        report["errors"].extend(sig.check_names())
    if report["errors"]:
        return finish(report)

    checked = set()
    for log in records(expected_path):
        request, response = log.predict_log.request, log.predict_log.response
        name = request.model_spec.signature_name or "serving_default"
        if name not in signatures:
            report["errors"].append(f"expected outputs for a signature the export lacks: {name!r}")
            continue
        try:
            got = signatures[name].run(request_inputs(request))
        except Exception as err:  # noqa: BLE001 (reported, not raised)
            report["errors"].append(f"{name}: the session run failed: {type(err).__name__}: {first_line(err)}")
            continue
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

    # Warmup replay, as TF Serving does on load: every record must run through its SignatureDef.
    warmup = records(os.path.join(export_dir, WARMUP))
    report["warmup_records"] = len(warmup)
    for i, log in enumerate(warmup):
        request = log.predict_log.request
        name = request.model_spec.signature_name or "serving_default"
        if name not in signatures:
            report["errors"].append(f"warmup record {i} names signature {name!r}, which the export lacks")
            continue
        try:
            signatures[name].run(request_inputs(request))
        except Exception as err:  # noqa: BLE001 (reported, not raised)
            report["errors"].append(f"warmup record {i} ({name}): {type(err).__name__}: {first_line(err)}")
    return finish(report)


def first_line(err):
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else repr(err)


def finish(report):
    # Proof for the report: no module of a blocked package was loaded.
    report["imported"] = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
    return report


if __name__ == "__main__":
    export_dir, expected_path, atol, rtol = sys.argv[1:5]
    print(json.dumps(main(export_dir, expected_path, float(atol), float(rtol))))
