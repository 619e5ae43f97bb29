"""Atomic, versioned SavedModel export in TF Serving's layout: ``<base_dir>/<name>/<version>/``.

TF Serving polls ``<base_dir>/<name>/`` for integer-named version directories. The export is
written to a hidden temporary directory beside them (not an integer, so the server ignores
it) and renamed into place: a rename within one filesystem is atomic, so a polling server
sees either no version or a complete one.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from bigkeras import checks
from bigkeras.serving import compatibility
from bigkeras.serving import warmup as warmup_lib
from bigkeras.serving.config import list_versions
from bigkeras.serving.deploy import deployable
from bigkeras.serving.signatures import Signature, default_signatures

# Expected outputs for the parity check: PredictionLog records (request and the response the
# Keras model gave) beside the warmup file. TF Serving ignores other files in assets.extra.
EXPECTED_FILE = "bigkeras_expected_outputs"

WarmupSpec = bool | Mapping[str, Sequence[Mapping[str, np.ndarray]]]


def export_saved_model(
    model: keras.Model,
    name: str,
    *,
    base_dir: str | os.PathLike = "saved_models",
    version: int | None = None,
    signatures: Mapping[str, Signature] | Callable[[keras.Model], Mapping[str, Signature]] | None = None,
    warmup: WarmupSpec = True,
    overwrite: bool = False,
    quantize: str | None = None,
) -> pathlib.Path:
    """Export ``model`` with serving signatures to ``<base_dir>/<name>/<version>/``.

    Besides the SavedModel, the export holds ``assets.extra/tf_serving_warmup_requests``
    (TF Serving replays it on load), ``assets.extra/bigkeras_expected_outputs`` (each
    signature's example inputs with the outputs the Keras model gave, which ``verify``
    compares against the export loaded without Keras) and
    ``assets.extra/bigkeras_serving_compatibility.json`` (the ops the graph needs and the TF
    Serving releases that register them: ``bigkeras.serving.compatibility``).

    Args:
        model: the ``keras.Model`` to export (its variables are tracked).
        name: str, the model name (the directory and the name clients request).
        base_dir: the export root that TF Serving's ``models.config`` covers.
            Default ``"saved_models"``.
        version: int, the version directory; default the next integer after the newest.
        signatures: ``{name: Signature}`` from ``bigkeras.serving.signatures``, or a function
            of the model returning them (needed when the exported model is a copy: LoRA or
            ``quantize``); default ``default_signatures(model)`` (image or plain classifier).
        warmup: ``True`` writes one warmup request per signature from its examples;
            ``{signature_name: [inputs, ...]}`` writes those; ``False`` writes none.
        overwrite: bool, replace an existing version directory. Default False.
        quantize: None (default) or ``"int8"``: export an int8 copy (``deploy.deployable``).
            A LoRA model is always exported with its adapters merged into the kernels.

    Returns:
        The path of the version directory.

    Raises:
        FileExistsError: the version exists and ``overwrite`` is False.

    Example:
        >>> model = bigkeras.build("cnn_tiny")
        >>> path = export_saved_model(model, "cnn", signatures=image_classifier_signatures(model))
        >>> path
        PosixPath('saved_models/cnn/1')
    """
    if not isinstance(name, str) or not name or os.sep in name or name.startswith("."):
        raise ValueError(f"`name` must be a non-empty directory name, got {name!r}.")
    deployed = deployable(model, quantize=quantize)
    if deployed is not model and signatures is not None and not callable(signatures):
        raise ValueError(
            "`signatures` must be a function of the model (e.g. `lambda m: text_classifier_signatures(m, ...)`) "
            "when the export is a merged-LoRA or quantized copy of it."
        )
    model = deployed
    if callable(signatures):
        signatures = signatures(model)
    signatures = dict(signatures if signatures is not None else default_signatures(model))
    if not signatures:
        raise ValueError("`signatures` must hold at least one signature.")
    model_dir = pathlib.Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = (list_versions(model_dir) or [0])[-1] + 1
    checks.positive_int("version", version)
    final = model_dir / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or another `version`.")

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir))
    try:
        _write_archive(model, signatures, tmp)
        compatibility.write_report(tmp)
        expected = [(sig_name, sig.examples, _run(sig, sig.examples)) for sig_name, sig in signatures.items()]
        _write_expected(tmp, name, expected)
        requests = _warmup_requests(signatures, warmup)
        if requests:
            warmup_lib.write_warmup(tmp, name, requests)
        _move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_expected(export_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """The ``(request, Keras response)`` records ``export_saved_model`` stored for parity."""
    path = os.path.join(os.fspath(export_dir), warmup_lib.WARMUP_DIR, EXPECTED_FILE)
    if not os.path.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def _write_archive(model: keras.Model, signatures: Mapping[str, Signature], path: pathlib.Path) -> None:
    archive = keras.export.ExportArchive()
    tracked = {}
    for resource in (model, *(r for sig in signatures.values() for r in sig.resources)):
        tracked.setdefault(id(resource), resource)
    for resource in tracked.values():
        # Lookup tables (tokenizers, vectorizers) must be tracked explicitly. A model's weights
        # need not: the archive saves every variable the endpoints use, and `track()` would
        # save each one a second time under another path (a SavedModel twice the model's size).
        if not isinstance(resource, keras.Model):
            archive.track(resource)
    for sig_name, sig in signatures.items():
        # A dict input signature gives the SavedModel signature these input names.
        archive.add_endpoint(sig_name, _takes_dict(sig.fn), input_signature=[dict(sig.inputs)])
    archive.write_out(os.fspath(path), verbose=False)


def _takes_dict(fn):
    def endpoint(inputs):
        return fn(**inputs)

    return endpoint


def _run(sig: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = {k: tf.constant(v, dtype=sig.inputs[k].dtype) for k, v in inputs.items()}
    return {k: np.asarray(v) for k, v in sig.fn(**tensors).items()}


def _write_expected(export_dir: pathlib.Path, model_name: str, expected) -> None:
    directory = export_dir / warmup_lib.WARMUP_DIR
    directory.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(os.fspath(directory / EXPECTED_FILE)) as writer:
        for sig_name, inputs, outputs in expected:
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=warmup_lib.predict_request(model_name, sig_name, inputs), response=response
                )
            )
            writer.write(log.SerializeToString())


def _warmup_requests(signatures: Mapping[str, Signature], warmup: WarmupSpec):
    if warmup is True:
        return [(sig_name, sig.examples) for sig_name, sig in signatures.items()]
    if warmup is False or warmup is None:
        return []
    if not isinstance(warmup, Mapping):
        raise ValueError(f"`warmup` must be True, False or {{signature: [inputs, ...]}}, got {type(warmup).__name__}.")
    unknown = sorted(set(warmup) - set(signatures))
    if unknown:
        raise ValueError(f"`warmup` names signatures {unknown}; the export has {sorted(signatures)}.")
    return [(sig_name, inputs) for sig_name, batch in warmup.items() for inputs in batch]


def _move_into_place(tmp: pathlib.Path, final: pathlib.Path) -> None:
    if not final.exists():
        try:
            os.rename(tmp, final)
            return
        except OSError as err:  # another exporter won the race for this version
            raise FileExistsError(f"{final} appeared while exporting; pick another `version`.") from err
    # overwrite=True: swap the old version out, the new one in, then delete the old one.
    trash = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, trash)
    os.rename(tmp, final)
    shutil.rmtree(trash)
