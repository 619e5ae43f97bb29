"""The `bigkeras` command: list, train, export + verify, inspect, predict, serving-command."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigkeras import cli
from bigkeras.serving import compatibility as compat
from bigkeras.serving import read_model_config
from tests.fake_tf_serving import FakeTFServing

ROOT = Path(__file__).resolve().parents[1]
TF_LOG_PREFIXES = ("I0000", "W0000", "E0000", "WARNING: All log messages before absl")


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def fake_export(base, name, version, ops, xla=False):
    """A version directory holding only the compatibility report of a graph with ``ops``."""
    path = base / name / str(version)
    compat.write_report(path, compat.compatibility_report(ops, xla=xla))
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


def test_serving_command_enables_xla_exactly_when_a_served_export_needs_it(tmp_path, capsys):
    fake_export(tmp_path, "mlp", 1, {"MatMul"})
    assert compat.XLA_CPU_FLAG not in shlex.split(run(capsys, "serving-command", "--base-dir", str(tmp_path))[1])
    fake_export(tmp_path, "gpt", 1, {"MatMul"}, xla=True)  # jit_compile=True export
    out = shlex.split(run(capsys, "serving-command", "--base-dir", str(tmp_path))[1])
    assert out.count("--xla_cpu_compilation_enabled=true") == 1
    fake_export(tmp_path, "gpt", 2, {"MatMul"})  # a plain version: version 1 (XLA) is still served beside it
    assert compat.XLA_CPU_FLAG in shlex.split(run(capsys, "serving-command", "--base-dir", str(tmp_path))[1])
    shutil.rmtree(tmp_path / "gpt" / "1")
    assert compat.XLA_CPU_FLAG not in shlex.split(run(capsys, "serving-command", "--base-dir", str(tmp_path))[1])


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


def test_export_quantize_choices_are_the_methods_deployable_takes():
    from bigkeras.serving.deploy import QUANTIZE

    assert set(cli.QUANTIZE_METHODS) == set(QUANTIZE) - {None}  # the CLI's copy, kept to stay free of Keras


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


# One error path: `bigkeras <command>: <message>`, exit status 1, no traceback, nothing left behind
# ---------------------------------------------------------------------------------------
def _bad_arguments(tmp):
    """(command line, what the message must say) per command, each a wrong argument."""
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00garbage, not a SavedModel proto")
    (tmp / "taken" / "mlp_tiny" / "1").mkdir(parents=True)
    closed = "127.0.0.1:9"  # the discard port: nothing listens there
    return [
        (["list", "resnet*", "extra"], r"unrecognized arguments: extra"),
        (["train", "nope", "--epochs", "1"], r"no recipe 'nope'"),
        (["export", str(tmp / "missing.keras"), "--base-dir", str(tmp / "out")], r"missing\.keras"),
        (["export", "no_such_model", "--base-dir", str(tmp / "out")], r"Unknown model 'no_such_model'"),
        (["export", "mlp_tiny", "--base-dir", str(tmp / "out"), "--version", "-3", "--no-verify"],
         r"`version` must be a positive integer, got -3"),
        (["export", "mlp_tiny", "--base-dir", str(tmp / "taken"), "--version", "1", "--no-verify"],
         r"mlp_tiny/1 exists"),
        (["export", "mlp_tiny", "--version", "abc"], r"argument --version: invalid int value: 'abc'"),
        (["inspect", str(tmp / "nowhere")], r"nowhere is not a SavedModel directory"),
        (["inspect", str(corrupt)], r"corrupt/saved_model\.pb is not a SavedModel protocol buffer"),
        (["verify", str(tmp / "nowhere")], r"nowhere is not a directory"),
        (["verify", str(corrupt)], r"verifying .*corrupt failed: .*DecodeError: Error parsing message"),
        (["predict", "--server", f"http://{closed}", "--model", "m", "--json", "{bad"], r"--json is not valid JSON"),
        (["predict", "--server", f"http://{closed}", "--model", "m", "--json", "[1]"], r"--json must be an object"),
        (["predict", "--server", f"http://{closed}", "--model", "m", "--text", "hi", "--timeout", "2"],
         r"cannot reach TF Serving at http://127\.0\.0\.1:9"),
        (["predict", "--server", closed, "--model", "m", "--text", "hi", "--timeout", "2"],
         r"cannot reach TF Serving at 127\.0\.0\.1:9"),
        (["serving-command", "--base-dir", str(tmp / "nofolder")], r"--base-dir .*nofolder is not a folder"),
        (["serving-command", "--base-dir", str(tmp / "taken"), "--max-batch-size", "x"], r"invalid int value: 'x'"),
    ]


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


def test_every_command_fails_on_one_line_with_status_1_and_leaves_nothing_behind(tmp_path, capsys):
    cases = _bad_arguments(tmp_path)
    commands = {argv[0] for argv, _ in cases}
    assert commands >= {"list", "train", "export", "inspect", "verify", "predict", "serving-command"}
    for argv, message in cases:
        before = {name: _tree(tmp_path / name) for name in ("out", "taken", "nofolder")}
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        text = exited.value.code  # a string: Python prints it to stderr and exits with status 1
        assert isinstance(text, str) and "\n" not in text, argv
        assert text.startswith(f"bigkeras {argv[0]}: "), text
        assert re.search(message, text), (argv, text)
        assert "Traceback" not in capsys.readouterr().err, argv
        assert {name: _tree(tmp_path / name) for name in before} == before, argv  # no partial output


def test_export_with_a_bad_version_leaves_no_model_folder(tmp_path):
    base = tmp_path / "saved_models"
    fake_export(base, "other", 1, {"MatMul"})
    (base / "models.config").write_text("kept as it was\n")
    with pytest.raises(SystemExit, match=r"^bigkeras export: `version` must be a positive integer, got -3\.$"):
        cli.main(["export", "mlp_tiny", "--base-dir", str(base), "--version", "-3", "--no-verify"])
    assert sorted(p.name for p in base.iterdir()) == ["models.config", "other"]
    assert (base / "models.config").read_text() == "kept as it was\n"


def test_traceback_flag_prints_the_whole_trace_on_the_same_error_path(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"^bigkeras verify: .*nowhere is not a directory"):
        cli.main(["verify", str(tmp_path / "nowhere"), "--traceback"])
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "FileNotFoundError" in err


@pytest.mark.processes
def test_the_console_command_exits_1_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bigkeras.cli", "list", "mlp*", "extra"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    # TensorFlow's C++ logging (absl) writes its start-up lines to stderr before any of ours.
    ours = [line for line in done.stderr.splitlines() if not line.startswith(TF_LOG_PREFIXES)]
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert ours == ["bigkeras list: unrecognized arguments: extra (see bigkeras --help)"]
