"""``TF_CONFIG``, checked, and a deadline for the workers it names to answer.

A malformed ``TF_CONFIG`` gives ``TFConfigError``, which names the variable and shows the
form it takes (``TF_CONFIG_FORM``). Before a multi-worker process builds its strategy (and
with it anything else), ``wait_for_peers`` waits until every other worker accepts a TCP
connection on its ``TF_CONFIG`` address, or the deadline passes and
``PeersUnreachableError`` names the peers that never answered. Without it a worker that
never starts leaves the others waiting on TensorFlow's registration timeout (an hour).

While it waits, each worker answers the others' probes on its own port; it closes that
listener before TensorFlow's server takes the port, and a probe then reaches TensorFlow's
server instead, so whichever comes first, a live worker answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

TF_CONFIG_FORM = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
                  '"index": 0}} (an optional "chief" list beside "worker")')  # fmt: skip
ROLES = ("chief", "worker", "evaluator")
TRAINING_ROLES = ("chief", "worker")
DEFAULT_PEER_DEADLINE = 180.0  # seconds: time for every worker of a job to start, far below TF's hour
DEADLINE_VARIABLE = "BIGKERAS_PEER_DEADLINE"
_PROBE_TIMEOUT = 1.0
_PROBE_INTERVAL = 0.25
_HELLO = "bigkeras-peer "  # a probe's first line: this, then the sender's role and index
_MAX_HELLO = 256  # bytes read from one probe


class TFConfigError(ValueError):
    """``TF_CONFIG`` is not of the form ``TF_CONFIG_FORM``."""


class PeersUnreachableError(RuntimeError):
    """Some workers of ``TF_CONFIG`` did not answer within the deadline."""


class WorkersDisagreeError(RuntimeError):
    """The workers of a run found different backups to resume from."""


def tf_config() -> dict | None:
    """The parsed, checked ``TF_CONFIG``; None when it is unset or empty.

    Raises:
        TFConfigError: not JSON, not an object, a cluster that is not ``role -> ["host:port",
            ...]``, or a task that is not one of the cluster's (the message shows the form).
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        _fail(f"is not valid JSON ({error})")
    if not isinstance(config, dict):
        _fail(f"must be a JSON object, got {type(config).__name__} {raw[:80]!r}")
    _check_cluster(config.get("cluster"))
    _check_task(config.get("task"), config["cluster"])
    return config


def _fail(problem: str):
    raise TFConfigError(f"TF_CONFIG {problem}. Expected the form {TF_CONFIG_FORM}.")


def _check_cluster(cluster) -> None:
    if not isinstance(cluster, dict) or not any(role in cluster for role in TRAINING_ROLES):
        _fail(f'needs "cluster": an object with a "worker" (or "chief") list, got {cluster!r}')
    for role, addresses in cluster.items():
        if role not in ROLES:
            _fail(f"cluster role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(addresses, list) or not addresses:
            _fail(f'cluster.{role} must be a non-empty list of "host:port" strings, got {addresses!r}')
        for i, address in enumerate(addresses):
            if split_address(address) is None:
                _fail(f'cluster.{role}[{i}]={address!r} is not a "host:port" string (port 1-65535)')


def _check_task(task, cluster: dict) -> None:
    if not isinstance(task, dict):
        _fail(f'needs "task": {{"type": ..., "index": ...}}, got {task!r}')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        _fail(f"task.type={kind!r} is not a role of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        _fail(f"task.index={index!r} is not an index of cluster.{kind} (0 to {len(cluster[kind]) - 1})")


def split_address(address) -> tuple[str, int] | None:
    """``("host", port)`` of a ``"host:port"`` (``"[::1]:2222"`` for IPv6), or None."""
    if not isinstance(address, str):
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def is_chief_task(config: dict | None) -> bool:
    """Whether the task of ``config`` writes the run directory (True without a cluster)."""
    if config is None:
        return True
    kind, index = config["task"]["type"], config["task"].get("index", 0)
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])


def peer_deadline(value: float | None = None) -> float:
    """``value``, else ``$BIGKERAS_PEER_DEADLINE``, else ``DEFAULT_PEER_DEADLINE`` (seconds)."""
    if value is None:
        raw = os.environ.get(DEADLINE_VARIABLE)
        try:
            value = DEFAULT_PEER_DEADLINE if raw in (None, "") else float(raw)
        except ValueError:
            raise ValueError(f"{DEADLINE_VARIABLE}={raw!r} must be a number of seconds.") from None
    if not value > 0:
        raise ValueError(f"the peer deadline must be a positive number of seconds, got {value!r}.")
    return float(value)


def peers(config: dict) -> dict[str, str]:
    """``{"worker 1": "host:port", ...}``: the training tasks of ``config`` other than its own."""
    me = (config["task"]["type"], config["task"].get("index", 0))
    return {f"{role} {i}": address for role in TRAINING_ROLES for i, address in enumerate(config["cluster"].get(role, []))
            if (role, i) != me}  # fmt: skip


def wait_for_peers(config: dict, deadline: float) -> None:
    """Return once every peer of ``config`` accepts a connection and has reached this worker's
    port in turn; raise after ``deadline`` s.

    Each worker answers on its own port while it waits, and each probe names its sender, so a
    worker stops answering only once every peer has heard it: a worker that starts late still
    finds the ones that started early (they do not move on before it reached them).

    Args:
        config: a checked ``TF_CONFIG`` (``tf_config()``).
        deadline: float, seconds to wait.

    Raises:
        PeersUnreachableError: naming each peer (role, index and address) that never answered,
            or that answered but never reached this worker's port.
    """
    others = peers(config)
    role, index = config["task"]["type"], config["task"].get("index", 0)
    me, port = f"{role} {index}", split_address(config["cluster"][role][index])[1]
    hello = f"{_HELLO}{me}\n".encode()
    pending, end = dict(others), time.monotonic() + deadline
    with _answer_probes(port, set(others)) as heard:
        while True:
            pending = {name: address for name, address in pending.items() if not _answers(address, hello)}
            unheard = {} if heard is None else {n: a for n, a in others.items() if n not in heard}
            if (not pending and not unheard) or time.monotonic() >= end:
                break
            time.sleep(_PROBE_INTERVAL)
    unheard = {name: address for name, address in unheard.items() if name not in pending}
    if pending or unheard:
        problems = [f"{len(pending)} of the {len(others)} other workers in TF_CONFIG never answered within "
                    f"{deadline:g} s: " + ", ".join(f"{name} ({address})" for name, address in pending.items())
                    ] if pending else []  # fmt: skip
        if unheard:
            problems.append(", ".join(f"{name} ({address})" for name, address in unheard.items()) + " answered but "
                            f"never reached this worker ({me}, port {port}) within {deadline:g} s")
        raise PeersUnreachableError(
            f"{'; '.join(problems)}. Start the same command on every worker with its own TF_CONFIG task, and "
            f"check the addresses and the network between them; {DEADLINE_VARIABLE} (seconds) sets the deadline."
        )


def _answers(address: str, hello: bytes) -> bool:
    """Whether ``address`` accepts a connection; it is told ``hello`` (who is asking)."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as connection:
            connection.sendall(hello)
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _answer_probes(port: int, expected: set[str]):
    """Accept (and let go of) connections on ``port`` while the block runs, if the port is free.

    Yields the set of ``expected`` workers whose probes named them (filled as they arrive), or
    ``None`` when the port was taken (by this process's own server, or another) and nothing
    answers here. Each connection is read for at most ``_PROBE_TIMEOUT`` seconds and
    ``_MAX_HELLO`` bytes, so a client that trickles bytes cannot keep the peers' probes waiting.
    """
    try:
        server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    except (OSError, ValueError):
        try:
            server = socket.create_server(("", port))
        except OSError:
            yield None
            return
    server.settimeout(_PROBE_INTERVAL)
    heard: set[str] = set()
    stop = threading.Event()
    thread = threading.Thread(target=_accept, args=(server, stop, heard, expected), name="bigkeras-peer-answer",
                              daemon=True)
    thread.start()
    try:
        yield heard
    finally:
        stop.set()
        thread.join()
        server.close()


def _accept(server: socket.socket, stop: threading.Event, heard: set[str], expected: set[str]) -> None:
    while not stop.is_set():
        try:
            connection, _ = server.accept()
        except (TimeoutError, OSError):
            continue
        with connection:  # wait for the prober to close first, so the port has no TIME_WAIT here
            received, until = b"", time.monotonic() + _PROBE_TIMEOUT
            with contextlib.suppress(OSError):
                while len(received) <= _MAX_HELLO and (left := until - time.monotonic()) > 0:
                    connection.settimeout(left)
                    if not (chunk := connection.recv(64)):
                        break
                    received += chunk
            name = received.split(b"\n", 1)[0].decode("utf-8", "replace").removeprefix(_HELLO)
            if received.startswith(_HELLO.encode()) and name in expected:
                heard.add(name)


# The cluster from the command line: `--workers HOST:PORT,HOST:PORT --worker-index I`.
INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_PROCID")  # Kubernetes Indexed Jobs, Slurm


class ClusterFlagError(ValueError):
    """A bad ``--workers`` / ``--worker-index`` flag or worker-index environment variable."""


def parse_workers(workers: str) -> list[str]:
    """The ``host:port`` list of a ``--workers`` value (comma-separated, at least one, no repeats)."""
    addresses = [a.strip() for a in str(workers).split(",") if a.strip()]
    if not addresses:
        raise ClusterFlagError(f"--workers must list host:port addresses separated by commas, got {workers!r}.")
    for address in addresses:
        if split_address(address) is None:
            raise ClusterFlagError(f"--workers: {address!r} is not a host:port address (port 1-65535).")
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise ClusterFlagError(f"--workers lists {', '.join(repeated)} more than once.")
    return addresses


def worker_index(flag: int | None, workers: int, environ=None) -> int:
    """This worker's index: ``flag``, else ``$JOB_COMPLETION_INDEX``, else ``$SLURM_PROCID``.

    Raises:
        ClusterFlagError: none is set, or the value is not an integer from 0 to ``workers - 1``
            (the message names the flag or the variable it came from).
    """
    environ = os.environ if environ is None else environ
    source, raw = "--worker-index", flag
    if flag is None:
        found = [(name, environ[name]) for name in INDEX_VARIABLES if environ.get(name, "").strip()]
        if not found:
            raise ClusterFlagError(f"--workers needs --worker-index (or {' or '.join(INDEX_VARIABLES)} set by the "
                                   "scheduler): which of the listed workers this host is, from 0.")
        source, raw = found[0]
    try:
        index = int(str(raw).strip())
    except ValueError:
        raise ClusterFlagError(f"{source} must be an integer from 0 to {workers - 1}, got {raw!r}.") from None
    if not 0 <= index < workers:
        raise ClusterFlagError(f"{source}={index} is not an index of the {workers} workers in --workers "
                               f"(0 to {workers - 1}).")
    return index


def tf_config_for(workers: str, index: int | None = None, environ=None) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` (see ``worker_index``) of ``--workers``."""
    addresses = parse_workers(workers)
    me = worker_index(index, len(addresses), environ)
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": me}})


def describe_task(config: dict | None) -> str:
    """One line saying which worker of ``config`` this process is (for every worker's log)."""
    if config is None:
        return "one process (no TF_CONFIG): this process is the chief"
    kind, index = config["task"]["type"], config["task"].get("index", 0)
    size = sum(len(config["cluster"].get(role, [])) for role in TRAINING_ROLES)
    own = config["cluster"][kind][index]
    role = "the chief: it writes the run directory and the export" if is_chief_task(config) else (
        "not the chief: it trains, then writes nothing outside a temporary folder")
    return f"{kind} {index} of {size} workers ({own}), {role}"
