"""A lost worker ends a multi-worker run with a clear error, within a bounded time.

When one worker of a ``MultiWorkerMirroredStrategy`` run dies, the collectives the others
are in, or enter next, can never complete. Three things make sure they do not wait forever
(times measured on two workers on one 2-core machine, TF 2.21):

- A dead peer's sockets: an all-reduce whose RPC to it is refused or reset fails at once
  (a SIGKILLed worker: the survivor exited 1.3 to 2.7 s after the kill).
- TensorFlow's coordination service, which the strategy starts: a peer that stops sending
  heartbeats (a frozen process, a vanished host) aborts the collectives (7 to 9 s after a
  SIGSTOP).
- ``PeerWatch``, the backstop that does not depend on TensorFlow's defaults: a thread that
  probes every other worker each ``HEALTH_INTERVAL_SECONDS`` (a probe waits at most
  ``HEALTH_TIMEOUT_SECONDS``) and after ``HEALTH_RETRIES`` failed probes in a row aborts
  this process's collectives: at most ``DETECTION_BOUND_SECONDS`` (21 s) after the peer
  stopped answering. (TensorFlow has such a check too, but switches it off whenever the
  coordination service runs.)

Either way a step raises a ``tf.errors`` exception; ``watch_peers`` turns it into
``WorkerLostError``, which says that a peer was lost and how to resume, and the process
exits non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import tensorflow as tf

from bigkeras import private_apis
from bigkeras.training.runs import read_state

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
        state = read_state(backup_dir)
        return None if state is None else int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PeerWatch:
    """A daemon thread that probes the other workers and aborts the collectives if one is lost.

    After an abort every collective of this process fails with ``UnavailableError`` naming
    the lost peer (and keeps failing: the process has to restart).

    Args:
        strategy: the ``MultiWorkerMirroredStrategy``.
        interval: float, seconds between rounds of probes; default ``HEALTH_INTERVAL_SECONDS``.
        timeout: float, seconds one probe may take; default ``HEALTH_TIMEOUT_SECONDS``.
        retries: int, failed probes in a row before the peer counts as lost; default
            ``HEALTH_RETRIES``.
    """

    def __init__(self, strategy, *, interval: float | None = None, timeout: float | None = None,
                 retries: int | None = None):
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
        self.interval = HEALTH_INTERVAL_SECONDS if interval is None else interval
        self.timeout = HEALTH_TIMEOUT_SECONDS if timeout is None else timeout
        self.retries = HEALTH_RETRIES if retries is None else retries
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bigkeras-peer-watch", daemon=True)

    def start(self) -> PeerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = dict.fromkeys(self.peers, 0)
        while not self._stop.wait(self.interval):
            for peer in self.peers:
                try:
                    private_apis.check_peer_health(peer, self.timeout)
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
                        private_apis.abort_collectives(message)
                        return


def _cause(message: str) -> str:
    """The line of a TensorFlow error that says what failed, not "Graph execution error:"."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if any(k in line.lower() for k in ("abort", "peer", "connect", "unavailable", "timed out", "health")):
            return line[:300]
    return (lines[-1] if lines else "")[:300]


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
        detail = _cause(err.message or str(err))
        lost = f" ({watch.lost} stopped answering)" if watch.lost else ""
        raise WorkerLostError(
            f"A peer worker was lost{lost}: {_task_name(strategy)} stopped because a collective "
            f"with the other workers failed ({type(err).__name__}: {detail}). Rerun the same "
            f"command on every worker; {resume}."
        ) from err
    finally:
        watch.stop()
