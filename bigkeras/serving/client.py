"""Clients for TF Serving's REST (port 8501) and gRPC (port 8500) predict APIs.

Both take ``{input_name: batch}`` and return ``{output_name: np.ndarray}``; both have a
timeout and raise ``ServingError`` (with the server's message) for rejected requests,
``ServingUnavailable`` when nothing answers and ``ServingTimeout`` when the answer is late.

    rest = RestClient("http://localhost:8501", "cnn")
    rest.predict({"image_bytes": [open("cat.jpg", "rb").read()]}, signature_name="serving_bytes")
    grpc_client = GrpcClient("localhost:8500", "cnn")
    grpc_client.predict({"images": images})
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from bigkeras import checks

MAX_GRPC_MESSAGE = 64 * 1024 * 1024  # images in a batch exceed gRPC's 4 MiB default


class ServingError(RuntimeError):
    """TF Serving rejected a request; ``status`` is the HTTP status or gRPC code name."""

    def __init__(self, message: str, status: int | str | None = None):
        super().__init__(message)
        self.status = status


class ServingUnavailable(ServingError, ConnectionError):
    """Nothing answered at the server address."""


class ServingTimeout(ServingUnavailable, TimeoutError):
    """The server did not answer within the client's timeout."""


def _model_path(model: str, version: int | None, label: str | None) -> str:
    if not isinstance(model, str) or not model:
        raise ValueError(f"`model` must be a non-empty model name, got {model!r}.")
    if version is not None and label is not None:
        raise ValueError(f"Pass `version` or `label`, not both (got {version!r} and {label!r}).")
    if version is not None:
        return f"{model}/versions/{checks.positive_int('version', version)}"
    return f"{model}/labels/{label}" if label is not None else model


class RestClient:
    """TF Serving's REST API: ``POST /v1/models/<name>[/versions/<v>]:predict``.

    Args:
        url: str, the server root, e.g. ``"http://localhost:8501"``.
        model: str, the model name in ``models.config``.
        version: optional int, a specific version; default the newest served.
        label: optional str, a version label from ``models.config`` (e.g. ``"stable"``).
        timeout: float, seconds to wait for an answer. Default 10.
    """

    def __init__(self, url: str, model: str, *, version: int | None = None, label: str | None = None, timeout: float = 10.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"`url` must start with http:// or https://, got {url!r}.")
        checks.positive_number("timeout", timeout)
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = float(timeout)
        self._model_url = f"{self.url}/v1/models/{_model_path(model, version, label)}"

    def predict(self, inputs: Mapping[str, object], *, signature_name: str | None = None, format: str = "columnar") -> dict:
        """Run a signature on a batch; return ``{output_name: np.ndarray}``.

        Args:
            inputs: ``{input_name: batch}`` (arrays or lists); ``bytes`` items are sent as
                ``{"b64": ...}``, so encoded images travel intact.
            signature_name: optional str; default ``serving_default``.
            format: ``"columnar"`` (``{"inputs": ...}`` -> ``{"outputs": ...}``) or
                ``"row"`` (``{"instances": [...]}`` -> ``{"predictions": [...]}``).
        """
        checks.one_of("format", format, ("columnar", "row"))
        columns = {k: _to_json(np.asarray(v) if not isinstance(v, (list, tuple)) else v) for k, v in inputs.items()}
        if format == "row":
            sizes = {len(v) for v in columns.values()}
            if len(sizes) != 1:
                raise ValueError(f"`inputs` must share one batch size for the row format, got sizes {sorted(sizes)}.")
            body = {"instances": [{k: v[i] for k, v in columns.items()} for i in range(sizes.pop())]}
        else:
            body = {"inputs": columns}
        if signature_name is not None:
            body["signature_name"] = signature_name
        answer = self._request(f"{self._model_url}:predict", body)
        if format == "row":
            rows = answer["predictions"]
            if rows and isinstance(rows[0], dict):
                return {k: _from_json([row[k] for row in rows]) for k in rows[0]}
            return {"predictions": _from_json(rows)}
        outputs = answer["outputs"]
        return {k: _from_json(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {"outputs": _from_json(outputs)}

    def status(self) -> dict:
        """``GET /v1/models/<name>``: the state of each served version."""
        return self._request(self._model_url)

    def metadata(self) -> dict:
        """``GET /v1/models/<name>/metadata``: the signatures of the served version."""
        return self._request(f"{self._model_url}/metadata")

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise ServingError(f"TF Serving answered {err.code} for {url}: {_error_text(err)}", err.code) from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise ServingTimeout(f"no answer from {self.url} within {self.timeout} s.") from None
            raise ServingUnavailable(f"cannot reach TF Serving at {self.url}: {err.reason}.") from None
        except (socket.timeout, TimeoutError):
            raise ServingTimeout(f"no answer from {self.url} within {self.timeout} s.") from None
        except ConnectionError as err:
            raise ServingUnavailable(f"the connection to TF Serving at {self.url} failed: {err}.") from None


class GrpcClient:
    """TF Serving's gRPC ``PredictionService/Predict`` (tensorflow-serving-api stubs).

    Args:
        target: str, ``"host:port"``, e.g. ``"localhost:8500"``.
        model: str, the model name in ``models.config``.
        version: optional int, a specific version; default the newest served.
        label: optional str, a version label (e.g. ``"stable"``).
        timeout: float, seconds to wait for each answer. Default 10.
    """

    def __init__(self, target: str, model: str, *, version: int | None = None, label: str | None = None, timeout: float = 10.0):
        if not isinstance(target, str) or ":" not in target or "/" in target:
            raise ValueError(f"`target` must be 'host:port' (no scheme), got {target!r}.")
        checks.positive_number("timeout", timeout)
        _model_path(model, version, label)  # validates the combination
        self.target = target
        self.timeout = float(timeout)
        self._spec = dict(name=model)
        if version is not None:
            self._spec["version"] = {"value": version}
        if label is not None:
            self._spec["version_label"] = label
        options = [("grpc.max_send_message_length", MAX_GRPC_MESSAGE), ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE)]
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def predict(self, inputs: Mapping[str, object], *, signature_name: str | None = None) -> dict:
        """Run a signature on a batch; return ``{output_name: np.ndarray}``.

        Numpy arrays travel with their own dtype (TF Serving rejects a mismatch); plain
        Python numbers and lists, as parsed from JSON, become float32 or int32, the dtypes
        of bigkeras signatures.
        """
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(**self._spec))
        if signature_name is not None:
            request.model_spec.signature_name = signature_name
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(_as_array(value)))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeout(f"no answer from {self.target} within {self.timeout} s.", code.name) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingUnavailable(f"cannot reach TF Serving at {self.target}: {details}", code.name) from None
            raise ServingError(f"TF Serving at {self.target} answered {code.name}: {details}", code.name) from None
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_array(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int32)
    return array.astype(object) if array.dtype.kind == "U" else array


def _to_json(value):
    """Numpy/list data to JSON values; bytes become ``{"b64": ...}`` as TF Serving expects."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    """JSON values back to an array; ``{"b64": ...}`` (outputs named ``*_bytes``) to bytes."""

    def decode(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v

    value = decode(value)
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind == "U" else array


def _error_text(err: urllib.error.HTTPError) -> str:
    raw = err.read().decode("utf-8", "replace")
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.strip() or err.reason
