"""Run requests against exports the way TF Serving does, in a fresh process without Keras.

    python tests/session_requests.py REQUESTS.pkl RESULTS.pkl
    python tests/session_requests.py --measure CASES.pkl RESULTS.pkl

``REQUESTS.pkl`` holds ``[(case, export_dir, signature, {input: ndarray}), ...]``. Each
export is loaded once through ``bigkeras/serving/verify_child.py``'s session path (TF1 loader,
feeds and fetches by SignatureDef tensor names, request tensors passed exactly as given);
every case is run, then the export's first request ``"good"`` case again, to show the process
still serves. ``RESULTS.pkl`` gets ``{case: {"ok": {output: ndarray}} | {"error": (type, first
line)}`` (each with ``"seconds"``), and ``case + "/then good"`` likewise.

``--measure`` runs hostile requests one after another in one process and tells each one's
memory apart: ``CASES.pkl`` holds ``[(case, export_dir, signature, good_inputs, hostile_inputs),
...]``; for each, the process answers the good request, resets its peak resident memory
(``/proc/self/clear_refs``, so the peak is measured from the memory in use right then, not from
an earlier case's high-water mark), runs the hostile request, and records how far the peak grew
above that (``"peak_growth_bytes"``), then answers the good request again (``"then good"``).
The request itself is in memory before the reset, as a server holds a request before its graph
runs; the growth is what serving it cost. ``RESULTS.pkl`` gets ``{case: result}``.
"""

import importlib.util
import pathlib
import pickle
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


def measure(cases_path, results_path):
    child = load_child()
    with open(cases_path, "rb") as f:
        cases = pickle.load(f)
    sessions, results = {}, {}
    for case, export_dir, signature, good, hostile in cases:
        if export_dir not in sessions:
            sessions[export_dir] = load_signatures(child, export_dir)
        served = sessions[export_dir][signature]
        first = run(served, good, child)
        before = reset_peak_memory()
        result = run(served, hostile, child)
        result["peak_growth_bytes"] = peak_memory() - before
        result["first good"], result["then good"] = first, run(served, good, child)
        results[case] = result
    with open(results_path, "wb") as f:
        pickle.dump(results, f)


def reset_peak_memory() -> int:
    """Set the peak resident memory (VmHWM) to the memory in use now; return it in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux 4.0+: "reset the peak resident set size"
    return peak_memory()


def peak_memory() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024


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
