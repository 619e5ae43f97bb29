"""A test-only stand-in for TF Serving: its REST and gRPC predict protocols over real exports.

TF Serving cannot be installed here, so the client tests talk to this server on 127.0.0.1.
It loads each ``saved_models/<name>/<version>`` with ``tf.saved_model.load`` and answers:

- REST (http.server): ``GET /v1/models/<name>[/versions/<v>]`` (status),
  ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`` with ``{"instances": ...}``
  -> ``{"predictions": ...}`` or ``{"inputs": ...}`` -> ``{"outputs": ...}``, ``{"b64": ...}``
  for string inputs; errors as ``{"error": "..."}`` with 400 (InvalidArgument) or 404.
- gRPC: ``tensorflow.serving.PredictionService/Predict`` via the tensorflow-serving-api
  servicer, INVALID_ARGUMENT / NOT_FOUND as TF Serving returns them.

``delay`` (seconds before answering) and ``fail_status`` (answer every REST call with this
HTTP status) let tests exercise client timeouts and server errors.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?P<verb>:predict|/metadata)?$")


class NotFound(LookupError):
    pass


class FakeTFServing:
    """Serve ``{name: {version: export_dir}}`` on 127.0.0.1 over REST and gRPC (ports chosen freely)."""

    def __init__(self, models: dict[str, dict[int, str]], labels: dict[str, dict[str, int]] | None = None):
        self.models = {name: {v: tf.saved_model.load(str(p)) for v, p in versions.items()} for name, versions in models.items()}
        self.labels = labels or {}
        self.delay = 0.0
        self.fail_status = None
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.rest_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Servicer(self), self._grpc)
        self.grpc_target = f"127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"

    def __enter__(self):
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._grpc.start()
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)

    def servable(self, name, version=None, label=None):
        if name not in self.models:
            raise NotFound(f"Servable not found for request: Latest({name})")
        if label is not None:
            version = self.labels.get(name, {}).get(label)
            if version is None:
                raise NotFound(f"Unrecognized servable version label: {label}")
        version = max(self.models[name]) if version is None else int(version)
        if version not in self.models[name]:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return version, self.models[name][version]

    def run(self, loaded, signature_name, inputs, *, cast=False):
        """Run a signature on ``{name: np.ndarray}``; ``cast`` converts JSON values to its dtypes
        (REST); gRPC tensors must already have them, else InvalidArgument, as in TF Serving."""
        signature_name = signature_name or "serving_default"
        if signature_name not in loaded.signatures:
            raise tf.errors.InvalidArgumentError(None, None, f"Serving signature name: \"{signature_name}\" not found in signature def")
        fn = loaded.signatures[signature_name]
        specs = fn.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise tf.errors.InvalidArgumentError(None, None, f"inputs {sorted(inputs)} do not match the signature's {sorted(specs)}")
        tensors = {k: tf.constant(v, dtype=specs[k].dtype if cast else None) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in fn(**tensors).items()}


def _decode_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


def _encode_json(name, array):
    array = np.asarray(array)
    if array.dtype == object:  # strings: text unless the output name ends in _bytes
        as_b64 = name.endswith("_bytes")
        return np.vectorize(
            lambda b: {"b64": base64.b64encode(b).decode()} if as_b64 else b.decode("utf-8"), otypes=[object]
        )(array).tolist()
    return array.tolist()


def _handler(server: FakeTFServing):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self):
            time.sleep(server.delay)
            if server.fail_status:
                return self._reply(server.fail_status, {"error": "injected failure"}), None
            match = ROUTE.match(self.path)
            if not match:
                return self._reply(404, {"error": f"Malformed request: {self.command} {self.path}"}), None
            return None, match

        def do_GET(self):
            _, match = self._route()
            if match is None:
                return
            try:
                version, _ = server.servable(match["name"], match["version"], match["label"])
            except NotFound as err:
                return self._reply(404, {"error": str(err)})
            versions = [version] if match["version"] else sorted(server.models[match["name"]])
            self._reply(200, {"model_version_status": [
                {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                for v in versions
            ]})

        def do_POST(self):
            _, match = self._route()
            if match is None:
                return
            if match["verb"] != ":predict":
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            try:
                _, loaded = server.servable(match["name"], match["version"], match["label"])
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "instances" in body:
                    rows = [_decode_json(row) for row in body["instances"]]
                    inputs = {k: np.array([row[k] for row in rows], dtype=None if not isinstance(rows[0][k], bytes) else object) for k in rows[0]}
                elif "inputs" in body:
                    inputs = {k: np.array(_decode_json(v), dtype=object if _is_bytes(v) else None) for k, v in body["inputs"].items()}
                else:
                    return self._reply(400, {"error": "Missing 'inputs' or 'instances' key"})
                outputs = server.run(loaded, body.get("signature_name"), inputs, cast=True)
            except NotFound as err:
                return self._reply(404, {"error": str(err)})
            except (tf.errors.InvalidArgumentError, ValueError, TypeError, KeyError) as err:
                return self._reply(400, {"error": getattr(err, "message", None) or str(err)})
            encoded = {k: _encode_json(k, v) for k, v in outputs.items()}
            if "instances" in body:
                batch = len(next(iter(outputs.values())))
                return self._reply(200, {"predictions": [{k: v[i] for k, v in encoded.items()} for i in range(batch)]})
            self._reply(200, {"outputs": encoded})

    return Handler


def _is_bytes(value):
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (dict, str))


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: FakeTFServing):
        self.server = server

    def Predict(self, request, context):
        time.sleep(self.server.delay)
        spec = request.model_spec
        which = spec.WhichOneof("version_choice")
        try:
            _, loaded = self.server.servable(
                spec.name,
                spec.version.value if which == "version" else None,
                spec.version_label if which == "version_label" else None,
            )
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.server.run(loaded, spec.signature_name, inputs)
        except NotFound as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(err, "message", None) or str(err))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response
