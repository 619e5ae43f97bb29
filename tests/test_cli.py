"""The `bigkeras` command: list, train, export + verify, inspect, predict, serving-command."""

import json
import shlex

import numpy as np
import pytest

from bigkeras import cli
from bigkeras.serving import compatibility as compat
from bigkeras.serving import read_model_config
from tests.fake_tf_serving import FakeTFServing


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def fake_export(base, name, version, ops):
    """A version directory holding only the compatibility report of a graph with ``ops``."""
    path = base / name / str(version)
    compat.write_report(path, compat.compatibility_report(ops))
    return path


def test_serving_command_is_the_docker_line(tmp_path, capsys):
    fake_export(tmp_path, "mlp", 1, {"MatMul", "Softmax"})
    code, out = run(capsys, "serving-command", "--base-dir", str(tmp_path), "--no-config")
    assert code == 0
    assert shlex.split(out) == [
        "docker", "run", "--rm", "-p", "8501:8501", "-p", "8500:8500",
        "--mount", f"type=bind,source={tmp_path.resolve()},target=/models,readonly",
        "tensorflow/serving:2.21.0",  # the newest release in the table that loads every model
        "--model_config_file=/models/models.config",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_model_warmup=true",
    ]
    assert not (tmp_path / "batching_parameters.txt").exists()


def test_serving_command_picks_a_release_that_loads_every_model_and_writes_batching(tmp_path, capsys):
    fake_export(tmp_path, "mlp", 1, {"MatMul"})
    fake_export(tmp_path, "bert", 1, {"MatMul", "TFText>RoundRobinTrim"})  # served: needs TF Serving 2.20+
    code, out = run(capsys, "serving-command", "--base-dir", str(tmp_path), "--tf-serving", "2.20")
    assert code == 0 and "tensorflow/serving:2.20.0" in shlex.split(out)
    with pytest.raises(SystemExit, match=r"bert/1: TF Serving 2\.19 cannot load this export: it does not register "
                                         r"TFText>RoundRobinTrim \(first in 2\.20\)"):
        cli.main(["serving-command", "--base-dir", str(tmp_path), "--tf-serving", "2.19"])
    fake_export(tmp_path, "bert", 2, {"MatMul"})  # a fixed version; models.config serves versions 1 and 2
    with pytest.raises(SystemExit, match="bert/1: TF Serving 2.19"):
        cli.main(["serving-command", "--base-dir", str(tmp_path), "--tf-serving", "2.19"])
    fake_export(tmp_path, "bert", 3, {"MatMul"})  # now 2 and 3 are served, and 2.19 loads both
    code, out = run(capsys, "serving-command", "--base-dir", str(tmp_path), "--tf-serving", "2.19", "--batching",
                    "--batch-threads", "3", "--max-batch-size", "16")
    args = shlex.split(out)
    assert "tensorflow/serving:2.19.1" in args
    assert args[-2:] == ["--enable_batching=true", "--batching_parameters_file=/models/batching_parameters.txt"]
    assert (tmp_path / "batching_parameters.txt").read_text() == (
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 1000 }\n"
        "max_enqueued_batches { value: 3 }\nnum_batch_threads { value: 3 }\n"
        + "".join(f"allowed_batch_sizes: {n}\n" for n in (1, 2, 4, 8, 16)))  # the rows the warmup covers
    with pytest.raises(SystemExit, match="`max_batch_size` must be a positive integer, got 0"):
        cli.main(["serving-command", "--base-dir", str(tmp_path), "--batching", "--max-batch-size", "0"])


def test_list_filters_models(capsys):
    code, out = run(capsys, "list", "mlp_*")
    assert code == 0 and out.split("\n\n")[0].split() == ["mlp_mnist", "mlp_tiny"]


def test_train_unknown_recipe_lists_known_ones():
    with pytest.raises(SystemExit, match="no recipe 'nope'"):
        cli.main(["train", "nope", "--epochs", "1"])


@pytest.mark.slow  # two exports, each verified in a fresh process: about 25 s
def test_export_quantize_int8_writes_a_smaller_verified_export(tmp_path, capsys):
    code, out = run(capsys, "export", "mlp_mnist", "--base-dir", str(tmp_path), "--name", "f32")
    assert code == 0
    code, out = run(capsys, "export", "mlp_mnist", "--base-dir", str(tmp_path), "--name", "i8", "--quantize", "int8")
    assert code == 0 and "verified: serving_default match Keras" in out

    def size(name):
        return sum(f.stat().st_size for f in (tmp_path / name / "1" / "variables").iterdir())

    assert size("i8") < 0.35 * size("f32")


def test_export_inspect_verify_predict(tmp_path, capsys):
    code, out = run(capsys, "export", "mlp_tiny", "--base-dir", str(tmp_path), "--class-names", "a,b,c")
    # Verified before it was published: one warmup record per bucket row count (1, 2, 4, ... 256).
    assert code == 0 and "verified: serving_default match Keras; 9 warmup records replay; loads on TF Serving 2.14+" in out
    path = tmp_path / "mlp_tiny" / "1"
    config = read_model_config(tmp_path / "models.config")
    assert [c.name for c in config.model_config_list.config] == ["mlp_tiny"]

    code, out = run(capsys, "inspect", str(path))
    assert "signature_def['serving_default']:" in out
    assert "inputs:\n    inputs: float32 (-1, 8, 8)" in out
    assert "class_id: int32 (-1)" in out and "class_name: string (-1)" in out
    assert "minimum TF Serving release: 2.14" in out and "tensorflow/serving:2.21.0    loads" in out

    with FakeTFServing({"mlp_tiny": {1: path}}) as server:
        x = np.zeros((2, 8, 8)).tolist()
        for target in (server.rest_url, server.grpc_target):
            code, out = run(capsys, "predict", "--server", target, "--model", "mlp_tiny", "--json", json.dumps({"inputs": x}))
            result = json.loads(out)
            assert code == 0 and len(result["class_id"]) == 2 and result["class_name"][0] in "abc"
            assert np.allclose(np.sum(result["probabilities"], axis=1), 1.0, atol=1e-5)
