"""Start the worker processes of a multi-worker test, bounded in time and always reaped.

    with Cluster(tmp_path) as cluster:
        procs = [cluster.start(f"worker{i}", [*SCRIPT, ...], tf_config(hosts, i)) for i in range(2)]
        logs = [cluster.finish(p) for p in procs]
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np

from tests import warm

ROOT = Path(__file__).resolve().parents[1]
# In place of sys.executable: the same interpreter, forked from a zygote that has imported TensorFlow
# and bigkeras (tests/warm.py), about 6 CPU-seconds less per process.
PYTHON = warm.python()
TIMEOUT = 240  # seconds: a hung collective fails the test instead of the suite


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free on ``host`` now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (``host:port``)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def load_weights(path) -> list[np.ndarray]:
    """The arrays ``np.savez(path, *weights)`` wrote, in order."""
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


class Cluster:
    """Processes of one test: each logs to ``<dir>/<name>.log``; all are killed on exit."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.procs: dict[subprocess.Popen, str] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        return False

    def start(self, name: str, cmd: list[str], config: str | None = None, env=None, cwd=ROOT) -> subprocess.Popen:
        """Start ``cmd`` in ``cwd`` with ``TF_CONFIG=config`` and a private ``TMPDIR``."""
        scratch = self.directory / f"tmp-{name}"
        scratch.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(scratch), **(env or {})}
        full_env.pop("TF_CONFIG", None)
        if config is not None:
            full_env["TF_CONFIG"] = config
        with open(self.log_path(name), "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
        self.procs[proc] = name
        return proc

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def log(self, proc: subprocess.Popen) -> str:
        return self.log_path(self.procs[proc]).read_text()

    def finish(self, proc: subprocess.Popen, timeout: float = TIMEOUT, expect_ok: bool = True) -> str:
        """Wait for ``proc`` (killing it after ``timeout`` s) and return its log."""
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(
                f"{self.procs[proc]} still ran after {timeout} s:\n{self.log(proc)[-3000:]}"
            ) from None
        if expect_ok:
            assert rc == 0, f"{self.procs[proc]} failed (exit {rc}):\n{self.log(proc)[-3000:]}"
        return self.log(proc)
