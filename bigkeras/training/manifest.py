"""A Kubernetes manifest that trains a recipe on several pods: an Indexed Job and a headless Service.

Plain Kubernetes, no operator (Kubeflow's ``TFJob`` is deprecated upstream). An Indexed Job
gives pod ``i`` the hostname ``<job>-<i>`` and ``JOB_COMPLETION_INDEX=i``; with the Job's pods
in the headless Service's subdomain, ``<job>-<i>.<service>`` resolves to pod ``i``. Every pod
runs the same ``bigkeras train NAME --workers <job>-0.<service>:PORT,...`` and takes its
``--worker-index`` from ``JOB_COMPLETION_INDEX``. ``restartPolicy: OnFailure`` reruns a
failed worker's command in its pod; the survivors stop with ``WorkerLostError`` and rerun too,
resuming from the chief's backup, so the run directory must be a volume every pod mounts
(``claim``: a ReadWriteMany PersistentVolumeClaim).

    print(kubernetes_manifest("fashion_mnist_cnn", workers=2, image="registry/bigkeras:1"))
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from bigkeras import checks

DEFAULT_PORT = 2222
MAX_WORKERS = 1024  # every pod's command line carries the whole --workers list (about 40 bytes each)
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,50}[a-z0-9])?$")  # a DNS label, short enough for "-<index>"


def worker_addresses(job: str, service: str, workers: int, port: int = DEFAULT_PORT) -> list[str]:
    """The ``--workers`` list of the Job's pods: ``<job>-<i>.<service>:<port>``."""
    return [f"{job}-{i}.{service}:{port}" for i in range(workers)]


def kubernetes_manifest(
    recipe: str,
    *,
    workers: int,
    image: str,
    port: int = DEFAULT_PORT,
    job: str | None = None,
    recipe_args: Sequence[str] = (),
    claim: str | None = None,
    mount: str = "/shared",
    backoff_limit: int = 6,
) -> str:
    """The YAML of a headless Service and an Indexed Job training ``recipe`` on ``workers`` pods.

    Args:
        recipe: str, a recipe name (``bigkeras train NAME``).
        workers: int, pods (workers); pod 0 is the chief.
        image: str, a container image with bigkeras installed (and the data, or a volume).
        port: int, the port the workers' collectives listen on.
        job: str, the Job's name (a DNS label); default the recipe name with ``-`` for ``_``.
            The Service is ``<job>-workers``.
        recipe_args: the recipe's own flags, e.g. ``["--epochs", "4", "--run-dir", "/shared/runs/x"]``;
            ``--resume`` is added when missing.
        claim: str, a PersistentVolumeClaim mounted at ``mount`` in every pod (the run directory
            and exports go there), or None.
        mount: str, where ``claim`` is mounted.
        backoff_limit: int, pod failures (restarts included) before the Job gives up.

    Returns:
        Two YAML documents: the Service, then the Job.
    """
    checks.positive_int("workers", workers)
    if workers > MAX_WORKERS:
        raise ValueError(f"`workers` must be at most {MAX_WORKERS} (each pod's command lists them all), got {workers}.")
    checks.positive_int("backoff_limit", backoff_limit, allow_zero=True)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"`port` must be a port number 1-65535, got {port!r}.")
    job = job or recipe.replace("_", "-").lower()
    if not _NAME.match(job):
        raise ValueError(f"`job` must be a DNS label (lower-case letters, digits, '-', at most 52), got {job!r}.")
    service = f"{job}-workers"
    # --resume: a pod's rerun after a failure continues from the backup (a first run starts fresh).
    resume = [] if "--resume" in recipe_args else ["--resume"]
    command = ["bigkeras", "train", recipe, "--workers", ",".join(worker_addresses(job, service, workers, port)),
               *recipe_args, *resume]  # fmt: skip
    q = json.dumps  # a JSON string is a YAML scalar: quoting without a YAML library
    volume_mounts = volumes = ""
    if claim:
        volume_mounts = f"""
        volumeMounts:
        - name: shared
          mountPath: {q(mount)}"""
        volumes = f"""
      volumes:
      - name: shared
        persistentVolumeClaim:
          claimName: {q(claim)}"""
    return f"""# bigkeras train {recipe} on {workers} workers: `kubectl apply -f` this file.
# Pod i is {job}-i.{service}; it takes --worker-index from JOB_COMPLETION_INDEX.
apiVersion: v1
kind: Service
metadata:
  name: {q(service)}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    job-name: {q(job)}
  ports:
  - name: collectives
    port: {port}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {q(job)}
spec:
  completionMode: Indexed
  completions: {workers}
  parallelism: {workers}
  backoffLimit: {backoff_limit}
  template:
    metadata:
      labels:
        job-name: {q(job)}
    spec:
      subdomain: {q(service)}
      restartPolicy: OnFailure
      containers:
      - name: worker
        image: {q(image)}
        command: [{", ".join(q(part) for part in command)}]
        ports:
        - containerPort: {port}{volume_mounts}{volumes}
"""
