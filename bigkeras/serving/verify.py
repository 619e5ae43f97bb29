"""Parity check of an export the way TF Serving runs it, in a fresh process without Keras or bigkeras.

``verify(path)`` runs ``verify_child.py`` with ``sys.executable``, or with the interpreter that
``$BIGKERAS_VERIFY_PYTHON`` names (another environment's Python, e.g. one with the TensorFlow of
the TF Serving release you deploy on; it needs numpy, tensorflow and tensorflow-serving-api,
and tensorflow-text for text exports). The child lists the graph's
ops (loading TF Text's kernels only when they are needed), loads the SavedModel with the TF1
loader into a session (variables restored, init op run, as the model server does), checks that
every tensor each SignatureDef names exists, runs every signature on the stored example
inputs by feeding and fetching those tensor names, compares with the outputs the Keras model
gave at export time, and replays the warmup file the same way. The parent then checks the
graph's ops against the TF Serving releases (``bigkeras.serving.compatibility``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

CHILD = pathlib.Path(__file__).with_name("verify_child.py")
PYTHON_VARIABLE = "BIGKERAS_VERIFY_PYTHON"
# TensorFlow's own start-up lines (absl/glog: "I0000 00:00:...", "WARNING: All log messages ..."), not the error.
_TF_LOG_LINE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:|WARNING: All log messages before absl)")


class VerificationError(RuntimeError):
    """The export does not reproduce the Keras model, or does not load or replay cleanly."""


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found. ``signatures`` maps name -> {"inputs"/"outputs": {name: spec}}."""

    path: str
    signatures: dict
    non_core_ops: list
    parity_checked: list
    unchecked_signatures: list
    warmup_records: int
    imported: list  # modules of keras/tf_keras/bigkeras the child loaded: always empty
    compatibility: dict  # bigkeras.serving.compatibility report: the TF Serving releases that load it


def verify(
    path: str | os.PathLike,
    *,
    expected: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    timeout: float = 300.0,
    tf_serving: str | None = None,
    model_name: str | None = None,
) -> VerifyReport:
    """Check an export as TF Serving runs it, in a fresh interpreter without Keras; raise on any problem.

    Args:
        path: the version directory (``saved_models/<name>/<version>``).
        expected: optional ``{signature: (inputs, outputs)}`` computed by the caller with
            the Keras model; by default the examples and outputs stored at export time.
        atol: float, absolute tolerance for float outputs. Default 1e-5.
        rtol: float, tolerance relative to each float output's largest magnitude. Default 1e-5.
        timeout: float, seconds the child may take. Default 300.
        tf_serving: optional str, a TF Serving release (``"2.19"``) that must be able to load
            the export; checked against ``bigkeras.serving.compatibility.RELEASES``.
        model_name: optional str, the model name in the requests (default the name of the
            directory holding ``path``).

    Returns:
        A ``VerifyReport``.

    Raises:
        VerificationError: outputs differ, a signature or warmup record fails, a SignatureDef
            names a tensor the graph lacks, the session load (restore or init op) fails, the
            graph needs ops neither TensorFlow nor TF Text provides, or the child crashed.
        IncompatibleRelease: ``tf_serving`` lacks ops the export needs (the message names
            them and the first release that has each).
        ValueError: ``$BIGKERAS_VERIFY_PYTHON`` is set but is not an executable's absolute path.

    Example:
        >>> report = verify("saved_models/cnn/1")
        >>> report.signatures["serving_default"]["outputs"]["class_id"]
        {'dtype': 'int32', 'shape': [None]}
    """
    from bigkeras.serving import compatibility as compat
    from bigkeras.serving.warmup import EXPECTED_FILE, WARMUP_DIR, write_expected  # needs TensorFlow

    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"`path` must be a SavedModel version directory; {path}/saved_model.pb is missing.")
    if tf_serving is not None:
        compat.release(tf_serving)  # a bad release name fails before the child runs
    python = child_python()
    with tempfile.TemporaryDirectory() as tmp:
        expected_path = path / WARMUP_DIR / EXPECTED_FILE
        if expected is not None:
            rows = [(sig, inputs, outputs) for sig, (inputs, outputs) in expected.items()]
            write_expected(tmp, model_name or path.parent.name, rows)
            expected_path = pathlib.Path(tmp) / WARMUP_DIR / EXPECTED_FILE
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        try:
            proc = subprocess.run(
                [python, os.fspath(CHILD), os.fspath(path), os.fspath(expected_path), str(atol), str(rtol)],
                capture_output=True, text=True, timeout=timeout, env=env,
            )
        except subprocess.TimeoutExpired as err:
            raise VerificationError(f"verifying {path} took more than {timeout} s.") from err
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not _TF_LOG_LINE.match(line)]
        error = VerificationError(f"verifying {path} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
        error.add_note("the verify process's output:\n" + "\n".join(lines)[-3000:])  # shown with the traceback
        raise error
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise VerificationError(f"verifying {path}: the verify process ({python} {CHILD.name}) printed no report; "
                                f"is {python} a Python with tensorflow?") from None
    problems = report["errors"] + report["mismatches"]
    if problems:
        raise VerificationError(f"{path} fails as TF Serving would run it:\n  " + "\n  ".join(problems))
    if not report["parity_checked"]:
        raise VerificationError(f"{path} has no expected outputs to compare with; pass `expected`.")
    report["compatibility"] = compat.compatibility_report(report["ops"], xla=bool(compat.xla_functions(path)))
    if tf_serving is not None:
        compat.check_release(report["compatibility"], tf_serving)
    return VerifyReport(**{k: report[k] for k in VerifyReport.__dataclass_fields__})


def child_python() -> str:
    """The interpreter of the verify process: ``$BIGKERAS_VERIFY_PYTHON`` if set, else ``sys.executable``."""
    value = os.environ.get(PYTHON_VARIABLE, "")
    if not value:
        return sys.executable
    if not os.path.isabs(value) or not os.path.isfile(value) or not os.access(value, os.X_OK):
        raise ValueError(f"{PYTHON_VARIABLE}={value!r} must be the absolute path of an executable Python "
                         "interpreter (unset it to use this one).")
    return value
