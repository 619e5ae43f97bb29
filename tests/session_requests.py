"""Run requests against exports the way TF Serving does, in a fresh process without Keras.

    python tests/session_requests.py REQUESTS.pkl RESULTS.pkl
    python tests/session_requests.py --measure CASE.pkl RESULT.pkl

``REQUESTS.pkl`` holds ``[(case, export_dir, signature, {input: ndarray}), ...]``. Each
export is loaded once through ``bigkeras/serving/verify_child.py``'s session path (TF1 loader,
feeds and fetches by SignatureDef tensor names, request tensors passed exactly as given);
every case is run, then the export's first request ``"good"`` case again, to show the process
still serves. ``RESULTS.pkl`` gets ``{case: {"ok": {output: ndarray}} | {"error": (type, first
line)}`` (each with ``"seconds"``), and ``case + "/then good"`` likewise.

``--measure`` runs one hostile request in a process of its own, so that its peak memory can be
told apart: ``CASE.pkl`` holds ``(export_dir, signature, good_inputs, hostile_inputs)``; the
process loads the export, answers the good request, takes its peak resident memory, runs the
hostile request, and records how far the peak grew (``"peak_growth_bytes"``), then answers the
good request again (``"then good"``). The request itself is in memory before the baseline, as a
server holds a request before its graph runs; the growth is what serving it cost.
"""

import importlib.util
import pathlib
import pickle
import resource
import sys
import time

CHILD = pathlib.Path(__file__).resolve().parent.parent / "bigkeras" / "serving" / "verify_child.py"


def load_child():
    spec = importlib.util.spec_from_file_location("verify_child", CHILD)
    child = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(child)  # blocks keras, tf_keras and bigkeras before TensorFlow loads
    return child


def load_signatures(child, export_dir):
    if child.unregistered(child.graph_ops(child.read_saved_model(export_dir))):
        child.load_tensorflow_text_kernels()
    return child.load_session(export_dir)[1]


def measure(case_path, result_path):
    child = load_child()
    with open(case_path, "rb") as f:
        export_dir, signature, good, hostile = pickle.load(f)
    served = load_signatures(child, export_dir)[signature]
    first = run(served, good, child)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = run(served, hostile, child)
    result["peak_growth_bytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    result["first good"], result["then good"] = first, run(served, good, child)
    with open(result_path, "wb") as f:
        pickle.dump(result, f)


def main(requests_path, results_path):
    child = load_child()

    with open(requests_path, "rb") as f:
        cases = pickle.load(f)
    sessions, good, results = {}, {}, {}
    for case, export_dir, signature, inputs in cases:
        if export_dir not in sessions:
            sessions[export_dir] = load_signatures(child, export_dir)
        if case.endswith("good"):
            good[(export_dir, signature)] = inputs
        results[case] = run(sessions[export_dir][signature], inputs, child)
        if (export_dir, signature) in good and not case.endswith("good"):
            results[case + "/then good"] = run(sessions[export_dir][signature], good[(export_dir, signature)], child)
    with open(results_path, "wb") as f:
        pickle.dump(results, f)


def run(signature, inputs, child):
    start = time.perf_counter()
    try:
        result = {"ok": signature.run(inputs)}
    except Exception as err:  # noqa: BLE001 (the server answers an error; the test reads it)
        result = {"error": (type(err).__name__, child.first_line(err))}
    result["seconds"] = time.perf_counter() - start
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--measure":
        measure(*sys.argv[2:4])
    else:
        main(*sys.argv[1:3])
