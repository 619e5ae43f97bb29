"""REST and gRPC clients against a local server speaking TF Serving's protocols over a real export."""

import socket

import numpy as np
import pytest
import tensorflow as tf

import bigkeras
from bigkeras.serving import GrpcClient, RestClient, ServingError, ServingUnavailable, export_saved_model
from bigkeras.serving.client import ServingTimeout
from bigkeras.serving.signatures import image_classifier_signatures
from tests.fake_tf_serving import FakeTFServing

CLASSES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    model = bigkeras.build("cnn_tiny")
    path = export_saved_model(model, "cnn", base_dir=base, signatures=image_classifier_signatures(model, class_names=CLASSES),
                              verify=False)  # the clients are under test here
    images = np.random.default_rng(0).integers(0, 256, size=(2, *model.inputs[0].shape[1:]), dtype=np.uint8)
    floats = images.astype(np.float32) / 255.0
    logits = np.asarray(model.predict_on_batch(floats))
    with FakeTFServing({"cnn": {1: path}}, labels={"cnn": {"stable": 1}}) as server:
        yield server, images, floats, logits
        server.delay, server.fail_status = 0.0, None


@pytest.mark.parametrize("form", ["row", "columnar"])
def test_rest_predict_float_images(served, form):
    server, _, floats, logits = served
    out = RestClient(server.rest_url, "cnn").predict({"images": floats}, format=form)
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
    np.testing.assert_array_equal(out["class_id"], logits.argmax(-1))
    assert list(out["class_name"]) == [CLASSES[i] for i in logits.argmax(-1)]


def test_rest_sends_bytes_as_b64_to_a_version_and_a_label(served):
    server, images, _, logits = served
    pngs = [tf.io.encode_png(i).numpy() for i in images]
    for client in (RestClient(server.rest_url, "cnn", version=1), RestClient(server.rest_url, "cnn", label="stable")):
        out = client.predict({"image_bytes": pngs}, signature_name="serving_bytes")
        np.testing.assert_allclose(out["logits"], logits, atol=1e-4)


def test_rest_status(served):
    status = RestClient(served[0].rest_url, "cnn").status()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_grpc_predict_images_and_bytes(served):
    server, images, floats, logits = served
    with GrpcClient(server.grpc_target, "cnn") as client:
        out = client.predict({"images": floats})
        np.testing.assert_allclose(out["logits"], logits, atol=1e-5)
        assert out["class_id"].dtype == np.int32
        pngs = np.array([tf.io.encode_png(i).numpy() for i in images], dtype=object)
        out = client.predict({"image_bytes": pngs}, signature_name="serving_bytes")
        assert [c.decode() for c in out["class_name"]] == [CLASSES[i] for i in logits.argmax(-1)]


def test_bad_requests_are_clear_errors(served):
    server, images, floats, _ = served
    rest = RestClient(server.rest_url, "cnn")
    with pytest.raises(ServingError, match=r"(?s)answered 400.*not compatible with expected shape") as err:
        rest.predict({"images": floats[0]}, format="columnar")  # no batch axis
    assert err.value.status == 400
    with pytest.raises(ServingError, match="answered 404.*Servable not found") as err:
        RestClient(server.rest_url, "nope").predict({"images": floats})
    with GrpcClient(server.grpc_target, "cnn") as client:
        with pytest.raises(ServingError, match="INVALID_ARGUMENT") as err:
            client.predict({"images": floats.astype(np.float64)})  # wrong dtype
        assert err.value.status == "INVALID_ARGUMENT"
        with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
            client.predict({"image_bytes": np.array([b"garbage"], dtype=object)}, signature_name="serving_bytes")
        # The server keeps answering after the errors.
        assert client.predict({"images": floats})["logits"].shape == (2, 3)


def test_server_errors_timeouts_and_unreachable_servers(served):
    server, _, floats, _ = served
    server.fail_status = 503
    with pytest.raises(ServingError, match="answered 503.*injected failure") as err:
        RestClient(server.rest_url, "cnn").predict({"images": floats})
    assert err.value.status == 503
    server.fail_status, server.delay = None, 1.0
    with pytest.raises(ServingTimeout, match="within 0.2 s"):
        RestClient(server.rest_url, "cnn", timeout=0.2).predict({"images": floats})
    with GrpcClient(server.grpc_target, "cnn", timeout=0.2) as client, pytest.raises(ServingTimeout):
        client.predict({"images": floats})
    server.delay = 0.0
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServingUnavailable, match=f"cannot reach TF Serving at http://127.0.0.1:{port}"):
        RestClient(f"http://127.0.0.1:{port}", "cnn", timeout=2).predict({"images": floats})
    with GrpcClient(f"127.0.0.1:{port}", "cnn", timeout=2) as client, pytest.raises(ServingUnavailable):
        client.predict({"images": floats})


def test_client_arguments_are_checked():
    with pytest.raises(ValueError, match="`url` must start with http"):
        RestClient("localhost:8501", "cnn")
    with pytest.raises(ValueError, match="`version` or `label`, not both"):
        RestClient("http://localhost:8501", "cnn", version=1, label="stable")
    with pytest.raises(ValueError, match="`target` must be 'host:port'"):
        GrpcClient("http://localhost:8500", "cnn")
