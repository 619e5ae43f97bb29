"""The cluster from the command line: ``--workers``/``--worker-index``, the worker index from
``JOB_COMPLETION_INDEX``/``SLURM_PROCID``, and the Kubernetes manifest (no cluster needed)."""

import json

import pytest
import yaml

from bigkeras import recipe
from bigkeras.training import cluster_config
from bigkeras.training.cluster_config import ClusterFlagError, tf_config_for, worker_index
from bigkeras.training.manifest import kubernetes_manifest

WORKERS = "10.0.0.1:2222,10.0.0.2:2222"


def test_tf_config_from_the_flags():
    config = json.loads(tf_config_for(WORKERS, 1, environ={}))
    assert config == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("environ, expected", [
    ({"JOB_COMPLETION_INDEX": "1"}, 1),  # Kubernetes Indexed Job
    ({"SLURM_PROCID": "1"}, 1),  # Slurm
    ({"JOB_COMPLETION_INDEX": "0", "SLURM_PROCID": "1"}, 0),  # the Job's index first
    ({"JOB_COMPLETION_INDEX": " ", "SLURM_PROCID": "1"}, 1),  # blank: not set
])
def test_the_worker_index_comes_from_the_scheduler_when_the_flag_is_absent(environ, expected):
    assert worker_index(None, 2, environ) == expected
    assert worker_index(0, 2, environ) == 0  # the flag wins


@pytest.mark.parametrize("flag, environ, message", [
    (None, {}, "--workers needs --worker-index .*JOB_COMPLETION_INDEX or SLURM_PROCID"),
    (None, {"JOB_COMPLETION_INDEX": "two"}, "JOB_COMPLETION_INDEX must be an integer from 0 to 1, got 'two'"),
    (None, {"SLURM_PROCID": "2"}, r"SLURM_PROCID=2 is not an index of the 2 workers in --workers \(0 to 1\)"),
    (-1, {}, "--worker-index=-1 is not an index"),
])
def test_a_bad_worker_index_names_where_it_came_from(flag, environ, message):
    with pytest.raises(ClusterFlagError, match=message):
        worker_index(flag, 2, environ)


@pytest.mark.parametrize("workers, message", [
    ("", "--workers must list host:port addresses"),
    ("10.0.0.1,10.0.0.2:2222", "--workers: '10.0.0.1' is not a host:port address"),
    ("a:1,a:1", "--workers lists a:1 more than once"),
])
def test_a_bad_workers_list_is_named(workers, message):
    with pytest.raises(ClusterFlagError, match=message):
        tf_config_for(workers, 0, environ={})


def test_recipe_flags_build_tf_config_and_set_up_the_collectives_first(monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("SLURM_PROCID", "1")
    made = []
    monkeypatch.setattr("bigkeras.training.make_strategy", lambda name: made.append(name))
    args = recipe.parse_args("Doc.", name="demo", data="digits", epochs=1, batch_size=8, argv=["--workers", WORKERS])
    import os

    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}
    assert made == ["multi_worker"] and args.workers == WORKERS
    assert "demo: worker 1 of 2 workers (10.0.0.2:2222), not the chief" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--worker-index", "0"], "--worker-index needs --workers"),
    (["--workers", WORKERS, "--worker-index", "0", "--strategy", "mirrored"], "--workers trains with --strategy"),
    (["--workers", "nohost"], "--workers: 'nohost' is not a host:port address"),
])
def test_recipe_flag_errors_are_one_line_and_name_the_flag(monkeypatch, capsys, argv, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        recipe.parse_args("Doc.", name="demo", data="digits", epochs=1, batch_size=8, argv=argv)
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_describe_task_says_what_each_worker_is():
    config = json.loads(tf_config_for(WORKERS, 0, environ={}))
    assert cluster_config.describe_task(config).startswith("worker 0 of 2 workers (10.0.0.1:2222), the chief")


def test_kubernetes_manifest_is_an_indexed_job_and_a_headless_service_of_the_workers(tmp_path):
    from bigkeras import cli

    path = tmp_path / "job.yaml"
    assert cli.main(["manifest", "fashion_mnist_cnn", "--num-workers", "3", "--image", "registry.example/bigkeras:1",
                     "--claim", "runs", "--output", str(path), "--", "--epochs", "4",
                     "--run-dir", "/shared/runs/fashion"]) == 0  # fmt: skip
    service, job = yaml.safe_load_all(path.read_text())
    assert (service["kind"], job["kind"], job["apiVersion"]) == ("Service", "Job", "batch/v1")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]} == labels
    assert pod["subdomain"] == service["metadata"]["name"]
    # Indexed Job pods are named <job>-<index> and resolve as <pod>.<subdomain>: the --workers list.
    hostnames = [f"{job['metadata']['name']}-{i}.{pod['subdomain']}" for i in range(3)]
    command = pod["containers"][0]["command"]
    assert command[:3] == ["bigkeras", "train", "fashion_mnist_cnn"] and "--worker-index" not in command
    workers = command[command.index("--workers") + 1].split(",")
    assert workers == [f"{h}:2222" for h in hostnames]
    assert command[command.index("--workers") + 2:] == ["--epochs", "4", "--run-dir", "/shared/runs/fashion", "--resume"]
    assert pod["containers"][0]["ports"] == [{"containerPort": 2222}] and service["spec"]["ports"][0]["port"] == 2222
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "runs"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/shared"


def test_kubernetes_manifest_refuses_bad_names_and_cluster_flags():
    with pytest.raises(ValueError, match="`job` must be a DNS label"):
        kubernetes_manifest("x", workers=2, image="i", job="Bad_Name")
    with pytest.raises(ValueError, match="`workers` must be at most 1024"):
        kubernetes_manifest("x", workers=100_000, image="i")
    from bigkeras import cli

    with pytest.raises(SystemExit, match="--workers and --worker-index come from the manifest"):
        cli.main(["manifest", "fashion_mnist_cnn", "--num-workers", "2", "--image", "i", "--workers", "a:1"])
