"""The `bigkeras` command: list, train, export + verify, inspect, predict, serving-command."""

import json
import shlex

import numpy as np
import pytest

from bigkeras import cli
from bigkeras.serving import read_model_config
from tests.fake_tf_serving import FakeTFServing


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_serving_command_is_the_docker_line(tmp_path, capsys):
    (tmp_path / "mlp" / "1").mkdir(parents=True)
    code, out = run(capsys, "serving-command", "--base-dir", str(tmp_path), "--no-config")
    assert code == 0
    assert shlex.split(out) == [
        "docker", "run", "--rm", "-p", "8501:8501", "-p", "8500:8500",
        "--mount", f"type=bind,source={tmp_path.resolve()},target=/models,readonly",
        "tensorflow/serving",
        "--model_config_file=/models/models.config",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_model_warmup=true",
    ]


def test_list_filters_models(capsys):
    code, out = run(capsys, "list", "mlp_*")
    assert code == 0 and out.split("\n\n")[0].split() == ["mlp_mnist", "mlp_tiny"]


def test_train_unknown_recipe_lists_known_ones():
    with pytest.raises(SystemExit, match="no recipe 'nope'"):
        cli.main(["train", "nope", "--epochs", "1"])


def test_export_inspect_verify_predict(tmp_path, capsys):
    code, out = run(capsys, "export", "mlp_tiny", "--base-dir", str(tmp_path), "--class-names", "a,b,c")
    assert code == 0 and "verified: serving_default match Keras; 1 warmup records replay" in out
    path = tmp_path / "mlp_tiny" / "1"
    config = read_model_config(tmp_path / "models.config")
    assert [c.name for c in config.model_config_list.config] == ["mlp_tiny"]

    code, out = run(capsys, "inspect", str(path))
    assert "signature_def['serving_default']:" in out
    assert "inputs:\n    inputs: float32 (-1, 8, 8)" in out
    assert "class_id: int32 (-1)" in out and "class_name: string (-1)" in out

    with FakeTFServing({"mlp_tiny": {1: path}}) as server:
        x = np.zeros((2, 8, 8)).tolist()
        for target in (server.rest_url, server.grpc_target):
            code, out = run(capsys, "predict", "--server", target, "--model", "mlp_tiny", "--json", json.dumps({"inputs": x}))
            result = json.loads(out)
            assert code == 0 and len(result["class_id"]) == 2 and result["class_name"][0] in "abc"
            assert np.allclose(np.sum(result["probabilities"], axis=1), 1.0, atol=1e-5)
