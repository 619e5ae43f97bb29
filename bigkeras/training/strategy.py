"""Pick a ``tf.distribute`` strategy, and tell the chief worker from the others.

On multi-worker runs every worker runs the same program; only the chief may write to the
run directory, the others write to temporary directories that are removed afterwards (the
TensorFlow multi-worker pattern).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager

import tensorflow as tf

from bigkeras import checks
from bigkeras.training import cluster_config
from bigkeras.training.config import STRATEGIES


def configure_cpu_replicas(n: int) -> None:
    """Split the first CPU into ``n`` logical devices so Mirrored runs ``n`` replicas.

    This has to happen before TensorFlow initialises its devices (before the first op,
    dataset or model); calling it again with the same ``n`` is a no-op. ``train()`` calls
    it; a program that makes its datasets first calls it (or ``make_strategy``) at the top.

    Args:
        n: int, the number of logical CPU devices; 0 or 1 leaves the CPU whole.

    Raises:
        RuntimeError: if TensorFlow's devices are already initialised with another split.
    """
    checks.positive_int("cpu_replicas", n, allow_zero=True)
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as err:
        raise RuntimeError(
            f"`cpu_replicas={n}` must be set before TensorFlow initialises its devices, but they are "
            "already initialised (an op, dataset or model ran first). Call "
            "`bigkeras.training.configure_cpu_replicas(n)` at the top of the program, before "
            "making datasets or models."
        ) from err


def cluster_size() -> int:
    """The number of workers ``TF_CONFIG`` lists (1 when it is unset)."""
    config = cluster_config.tf_config()
    cluster = config["cluster"] if config else {}
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker")) or 1


def make_strategy(name: str = "auto", *, cpu_replicas: int = 0, peer_deadline: float | None = None
                  ) -> tf.distribute.Strategy:  # fmt: skip
    """Build the named strategy.

    Args:
        name: ``"auto"``, ``"default"``, ``"one_device"``, ``"mirrored"`` or ``"multi_worker"``.
            ``"auto"`` picks multi-worker when ``TF_CONFIG`` lists several workers, else
            Mirrored over the GPUs (or over ``cpu_replicas`` logical CPUs), else the default.
        cpu_replicas: int, logical CPU devices to mirror over when there is no GPU.
        peer_deadline: float, seconds a multi-worker process waits for every other worker of
            ``TF_CONFIG`` to answer before it builds anything; default ``BIGKERAS_PEER_DEADLINE``
            or ``cluster_config.DEFAULT_PEER_DEADLINE`` (180 s). See ``cluster_config.wait_for_peers``.

    Raises:
        cluster_config.TFConfigError: ``TF_CONFIG`` is malformed (the message shows its form).
        cluster_config.PeersUnreachableError: a peer never answered, or never reached this worker, within the deadline.

    Both the CPU split and the multi-worker strategy need a runtime that has not run
    anything yet: a program that builds its datasets before ``train()`` calls this first
    (the multi-worker strategy is made once per process and reused by ``train()``).

    Returns:
        A ``tf.distribute.Strategy``.

    Example:
        >>> strategy = make_strategy("mirrored", cpu_replicas=2)
        >>> strategy.num_replicas_in_sync
        2
    """
    checks.one_of("strategy", name, STRATEGIES)
    if name == "multi_worker" or (name == "auto" and cluster_size() > 1):
        return _multi_worker_strategy(peer_deadline)
    configure_cpu_replicas(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0].name)
    if name == "mirrored" or (name == "auto" and (gpus or cpu_replicas > 1)):
        devices = [d.name for d in (gpus or cpus)]
        # On CPU there is no NCCL: reduce through one device.
        ops = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
    return tf.distribute.get_strategy()


_MULTI_WORKER: list[tf.distribute.MultiWorkerMirroredStrategy] = []


def _multi_worker_strategy(peer_deadline: float | None = None) -> tf.distribute.MultiWorkerMirroredStrategy:
    # Collective ops can be configured once per process, before anything else runs, so
    # the strategy is made once and shared by every later call.
    if not _MULTI_WORKER:
        config = cluster_config.tf_config()
        if config is not None:  # every peer answers, or a clear error instead of an hour's wait
            cluster_config.wait_for_peers(config, cluster_config.peer_deadline(peer_deadline))
        try:
            _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        except RuntimeError as err:
            raise RuntimeError(
                "The multi-worker strategy must be created before TensorFlow runs anything "
                "(datasets, models, ops). Call `bigkeras.training.make_strategy(\"multi_worker\")` "
                "at the top of the program; train() then reuses it."
            ) from err
    return _MULTI_WORKER[0]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans several worker processes."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(role, [])) for role in ("chief", "worker")) > 1


def agree_on_epoch(strategy: tf.distribute.Strategy, epoch: int, backup_dir: str) -> int:
    """The epoch every worker resumes at: ``epoch``, once every worker found the same.

    Each worker restores the backup on its own; a worker that read another backup (the run
    directory is not on a shared filesystem, or a backup changed between the reads) would
    train other epochs on other weights. One all-gather compares them.

    Raises:
        cluster_config.WorkersDisagreeError: the workers found different epochs.
    """
    if not is_multi_worker(strategy):
        return epoch

    @tf.function
    def gather():
        def replica_fn():
            return tf.distribute.get_replica_context().all_gather(tf.constant([epoch], tf.int64), axis=0)

        return strategy.run(replica_fn)

    found = sorted({int(e) for e in strategy.experimental_local_results(gather())[0].numpy()})
    if len(found) > 1:
        raise cluster_config.WorkersDisagreeError(
            f"The workers found different backups in {backup_dir}: they would resume at epochs "
            f"{', '.join(str(e + 1) for e in found)}. Every worker must read the chief's run directory (a shared "
            "filesystem); rerun on every worker once it does, or start fresh with TrainConfig(resume=False)."
        )
    return epoch


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker of ``strategy`` got here (one small all-reduce)."""
    if not is_multi_worker(strategy):
        return

    @tf.function
    def meet():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1)))

    meet()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process may write the run's outputs (always True on one worker)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


@contextmanager
def writable_run_dir(run_dir: str, strategy: tf.distribute.Strategy):
    """Yield the directory this worker writes to: ``run_dir`` on the chief, else a temp dir.

    Non-chief workers still run every save (saving can involve collectives) but into a
    temporary directory that is removed on exit.
    """
    if is_chief(strategy):
        os.makedirs(run_dir, exist_ok=True)
        yield run_dir
        return
    tmp = tempfile.mkdtemp(prefix=f"bigkeras_worker{strategy.cluster_resolver.task_id}_")
    logging.getLogger(__name__).info("not the chief: writing to %s, removed at the end", tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
