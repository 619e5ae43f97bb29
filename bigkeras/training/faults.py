"""A lost worker ends a multi-worker run with a clear error, within a bounded time.

When one worker of a ``MultiWorkerMirroredStrategy`` run dies, the collectives the others
are in, or enter next, can never complete. Two things make sure they do not wait forever:

- ``PeerWatch``, a thread that probes every other worker each ``HEALTH_INTERVAL_SECONDS``
  (each probe waits at most ``HEALTH_TIMEOUT_SECONDS``) and, after ``HEALTH_RETRIES``
  failed probes in a row, aborts this process's collectives. TensorFlow has the same check
  but switches it off whenever its coordination service runs, which is the default.
- A dead peer's socket: an all-reduce whose RPC to it breaks fails at once.

Either way a step raises a ``tf.errors`` exception; ``watch_peers`` turns it into
``WorkerLostError``, which says that a peer was lost and how to resume. A survivor fails at
most ``DETECTION_BOUND_SECONDS`` after a peer dies, plus the time to unwind its step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading

import tensorflow as tf
from tensorflow.python.eager import context

HEALTH_INTERVAL_SECONDS = 2.0
HEALTH_TIMEOUT_SECONDS = 5.0
HEALTH_RETRIES = 3
# Each failed round of probes costs at most one interval and one probe timeout.
DETECTION_BOUND_SECONDS = HEALTH_RETRIES * (HEALTH_INTERVAL_SECONDS + HEALTH_TIMEOUT_SECONDS)

# What a collective raises when a peer is gone: its RPCs fail or it was aborted
# (Unavailable, Aborted, Cancelled), it timed out (DeadlineExceeded), or the peer came
# back as a new process (FailedPrecondition).
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.FailedPreconditionError,
)

_log = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """A peer worker of a multi-worker run was lost; this worker stopped training."""


def backed_up_epoch(backup_dir: str) -> int | None:
    """The epoch a rerun resumes at (``training_state.json``), or None without a backup."""
    try:
        with open(os.path.join(backup_dir, "training_state.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PeerWatch:
    """A daemon thread that probes the other workers and aborts the collectives if one is lost.

    After an abort every collective of this process fails with ``UnavailableError`` naming
    the lost peer (and keeps failing: the process has to restart).

    Args:
        strategy: the ``MultiWorkerMirroredStrategy``.
        interval: float, seconds between rounds of probes.
        timeout: float, seconds one probe may take.
        retries: int, failed probes in a row before the peer counts as lost.
    """

    def __init__(self, strategy, *, interval=HEALTH_INTERVAL_SECONDS, timeout=HEALTH_TIMEOUT_SECONDS,
                 retries=HEALTH_RETRIES):
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec()
        me = (resolver.task_type, resolver.task_id)
        self.peers = [
            f"/job:{job}/replica:0/task:{task}"
            for job in spec.jobs
            if job in ("chief", "worker")
            for task in range(spec.num_tasks(job))
            if (job, task) != me
        ]
        self.interval, self.timeout, self.retries = interval, timeout, retries
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bigkeras-peer-watch", daemon=True)

    def start(self) -> PeerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        ctx = context.context()
        failures = dict.fromkeys(self.peers, 0)
        while not self._stop.wait(self.interval):
            for peer in self.peers:
                try:
                    ctx.check_collective_ops_peer_health(peer, timeout_in_ms=int(self.timeout * 1000))
                    failures[peer] = 0
                except (tf.errors.UnavailableError, tf.errors.FailedPreconditionError,
                        tf.errors.DeadlineExceededError) as err:
                    failures[peer] += 1
                    _log.warning("peer %s did not answer a health check (%d/%d): %s",
                                 peer, failures[peer], self.retries, type(err).__name__)
                    if failures[peer] >= self.retries and not self._stop.is_set():
                        self.lost = peer
                        message = f"bigkeras: peer {peer} is lost ({self.retries} health checks failed)"
                        _log.error("%s; aborting the collectives", message)
                        ctx.abort_collective_ops(tf.errors.UNAVAILABLE, message)
                        return


def _task_name(strategy) -> str:
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type} {resolver.task_id}"


@contextlib.contextmanager
def watch_peers(strategy, backup_dir: str):
    """Run the block with a ``PeerWatch``; a lost peer's error leaves as ``WorkerLostError``.

    Args:
        strategy: the ``MultiWorkerMirroredStrategy`` the block trains under.
        backup_dir: str, the run's backup directory (the message names the resume epoch).

    Raises:
        WorkerLostError: from the ``tf.errors`` exception a lost peer caused.
    """
    watch = PeerWatch(strategy).start()
    try:
        yield watch
    except PEER_ERRORS as err:
        epoch = backed_up_epoch(backup_dir)
        resume = (
            f"training resumes from the backup in {backup_dir} at epoch {epoch + 1}"
            if epoch is not None
            else f"there is no backup in {backup_dir} yet, so training starts again from epoch 1"
        )
        detail = ((err.message or str(err)).strip().splitlines() or [""])[0][:300]
        lost = f" ({watch.lost} stopped answering)" if watch.lost else ""
        raise WorkerLostError(
            f"A peer worker was lost{lost}: {_task_name(strategy)} stopped because a collective "
            f"with the other workers failed ({type(err).__name__}: {detail}). Rerun the same "
            f"command on every worker; {resume}."
        ) from err
    finally:
        watch.stop()
