"""TF Serving warmup requests: ``<version>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays these ``PredictionLog`` records when it loads a version, before marking it
AVAILABLE, so the first real request does not pay for graph initialisation (lookup tables,
oneDNN kernel selection). The file is a TFRecord; TF Serving reads at most 1,000 records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
# Expected outputs for the parity check: PredictionLog records (request and the response the
# Keras model gave) beside the warmup file. TF Serving ignores other files in assets.extra.
EXPECTED_FILE = "bigkeras_expected_outputs"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit (servables/tensorflow/saved_model_warmup_util)


def predict_request(model_name: str, signature_name: str, inputs: Mapping[str, np.ndarray]) -> predict_pb2.PredictRequest:
    """A ``PredictRequest`` for ``signature_name`` with each input as a ``TensorProto``."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    return request


def write_warmup(
    export_dir: str | os.PathLike,
    model_name: str,
    requests: Iterable[tuple[str, Mapping[str, np.ndarray]]],
) -> str:
    """Write ``(signature_name, inputs)`` pairs as the warmup file of an export.

    Args:
        export_dir: the version directory (``saved_models/<name>/<version>``).
        model_name: str, the model's name in requests.
        requests: iterable of ``(signature_name, {input_name: batch_array})``.

    Returns:
        The path of the written file.

    Raises:
        ValueError: more than 1,000 requests (TF Serving would ignore the rest).
    """
    requests = list(requests)
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"`requests` has {len(requests)} warmup requests; TF Serving reads at most "
            f"{MAX_WARMUP_RECORDS}."
        )
    directory = os.path.join(os.fspath(export_dir), WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=predict_request(model_name, signature_name, inputs)
                )
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup(export_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """The ``PredictionLog`` records of an export's warmup file (empty when there is none)."""
    path = os.path.join(os.fspath(export_dir), WARMUP_DIR, WARMUP_FILE)
    if not os.path.exists(path):
        return []
    records = tf.data.TFRecordDataset(path).as_numpy_iterator()
    return [prediction_log_pb2.PredictionLog.FromString(record) for record in records]


def write_expected(export_dir: str | os.PathLike, model_name: str, expected) -> str:
    """Write ``(signature, inputs, outputs)`` triples as PredictionLog records for ``verify``.

    Returns:
        The path of the written file (``assets.extra/bigkeras_expected_outputs``).
    """
    directory = os.path.join(os.fspath(export_dir), WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, EXPECTED_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs, outputs in expected:
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=predict_request(model_name, signature_name, inputs), response=response
                )
            )
            writer.write(log.SerializeToString())
    return path


def read_expected(export_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """The ``(request, Keras response)`` records an export stored for the parity check."""
    path = os.path.join(os.fspath(export_dir), WARMUP_DIR, EXPECTED_FILE)
    if not os.path.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
