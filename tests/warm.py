"""Python processes for the tests without paying TensorFlow's import each time.

Most of a smoke-sized recipe run or training worker is interpreter start-up: importing
TensorFlow, Keras and bigkeras takes about 6 CPU-seconds per process, and the suite starts
dozens. A *zygote* imports them once, before TensorFlow's runtime exists (no eager context, no
thread pools), and forks a fresh process for each command. The tests start commands through a
*launcher*, an executable used in place of ``sys.executable``::

    subprocess.run([warm.python(), "recipes/fashion_mnist_cnn.py", "--smoke"], ...)

The launcher (a ``python -S -E`` script: standard library only, about 10 ms) hands the zygote
its argv, environment, working directory, standard streams and network namespace over a Unix
socket, and stands for the forked process: it exits with its exit status or dies of the same
signal, a SIGTERM or SIGINT sent to it is passed on, and if it is killed (a timeout, a test's
``proc.kill()``) the zygote SIGKILLs the forked process and everything it started. Each forked
process is a real process of its own: a new session, the caller's cwd, environment, streams and
namespace, TensorFlow's runtime created after the fork, its own children started from the real
interpreter. What it shares with the zygote is only what the imports did.

Where that could differ from ``python ...``, the launcher runs the real interpreter instead
(``exec``): no zygote is listening, a Python option other than ``-u``/``-c``/``-m``, or an
environment variable that the imports read (``IMPORT_ENV``) differs from the zygote's.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import struct
import sys

# Read while importing TensorFlow, Keras or numpy: a command whose values differ is not forked.
IMPORT_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE", "KERAS_BACKEND",
              "KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",
              "TF_USE_LEGACY_KERAS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
# What each kind of zygote imports: "bigkeras" for recipes and training workers; "verify" for
# ``verify``'s process (BIGKERAS_VERIFY_PYTHON): the top of verify_child.py, which makes Keras and
# bigkeras unimportable and imports TensorFlow, so its forks import neither, as a fresh one would not.
PRELOAD = {"bigkeras": ("tensorflow", "keras", "keras_hub", "tensorflow_text", "bigkeras", "bigkeras.recipe",
                        "bigkeras.serving", "bigkeras.training", "bigkeras.data", "bigkeras.checkpoints"),
           "verify": ()}
VERIFY_CHILD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bigkeras", "serving",
                            "verify_child.py")
MAX_MESSAGE = 16 << 20  # bytes: argv + environment
POLL_SECONDS = 0.05
_COMMAND = False  # True in a forked command (not in the zygote or a monitor)


# ----------------------------------------------------------------------------- launcher


def write_launcher(path: str, socket_path: str) -> str:
    """Write the executable launcher at ``path`` for the zygote at ``socket_path``; return ``path``."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(path, "w") as f:
        f.write(f"#!{sys.executable} -SE\n"
                f"import sys; sys.path.insert(0, {here!r}); import warm\n"
                f"warm.launch({socket_path!r}, {sys.executable!r})\n")
    os.chmod(path, 0o755)
    return path


def launch(socket_path: str, real_python: str) -> None:
    """The launcher's body: run ``sys.argv[1:]`` as ``python`` would, through the zygote."""
    args = sys.argv[1:]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(socket_path)
    except OSError:
        os.execv(real_python, [real_python, *args])
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    request = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2, netns])
    os.close(netns)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # passed on to the forked process
        signal.signal(sig, lambda sig, _frame: conn.sendall(b"K" + bytes([sig])))
    reply = b""
    while len(reply) < 2:
        try:
            chunk = conn.recv(2 - len(reply))
        except InterruptedError:
            continue
        if not chunk:  # the zygote died
            sys.stderr.write("tests/warm.py: the zygote went away\n")
            os._exit(70)
        reply += chunk
    kind, value = reply[:1], reply[1]
    if kind == b"X":  # the command cannot be forked: run it here
        os.execv(real_python, [real_python, *args])
    if kind == b"S":
        if value not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
    os._exit(value)


# ----------------------------------------------------------------------------- zygote


def serve(socket_path: str, kind: str) -> None:
    """Import ``PRELOAD[kind]``, then fork one process per launcher that connects to ``socket_path``."""
    import importlib.util

    if kind == "verify":
        spec = importlib.util.spec_from_file_location("verify_child_preload", VERIFY_CHILD)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    for name in PRELOAD[kind]:
        importlib.import_module(name)
    from tensorflow.python.eager import context

    if context.context_safe() is not None and context.context()._context_handle is not None:
        raise RuntimeError("importing the preloads started TensorFlow's runtime: forking it would not be safe")
    import gc

    gc.freeze()  # what the imports made: the forks' collections skip it (and do not copy its pages)
    env = {k: os.environ.get(k) for k in IMPORT_ENV}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path + ".new")
    server.listen(64)
    os.rename(socket_path + ".new", socket_path)  # launchers connect only once the imports are done
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the monitors reap themselves
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            server.close()
            try:
                _monitor(conn, env)
            except BaseException:
                if _COMMAND:  # the command's SystemExit: end as Python ends (atexit, flushed streams)
                    raise
            os._exit(0)
        conn.close()


def _monitor(conn: socket.socket, zygote_env: dict) -> None:
    """Read one request, fork its process, pass signals on, report how it ended."""
    header, fds, _, _ = socket.recv_fds(conn, 4, 4)
    (size,) = struct.unpack("!I", header)
    if size > MAX_MESSAGE or len(fds) != 4:
        return
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return
        body += chunk
    request = json.loads(body)
    if not _forkable(request, zygote_env):
        conn.sendall(b"X\0")
        return
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        readable, _, _ = select.select([conn], [], [], POLL_SECONDS)
        if readable:
            message = conn.recv(2)
            if len(message) == 2 and message[:1] == b"K":
                os.kill(pid, message[1])
            elif not message:  # the launcher was killed: so is its process, with all it started
                _kill_group(pid)
                os.waitpid(pid, 0)
                return
    if os.WIFSIGNALED(status):
        conn.sendall(b"S" + bytes([os.WTERMSIG(status)]))
    else:
        conn.sendall(b"E" + bytes([os.WEXITSTATUS(status) & 0xFF]))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _program(args: list[str]) -> tuple[bool, list[str]]:
    """``python``'s arguments as ``(-u given, the rest)``: a script and its arguments, or -c/-m and theirs."""
    unbuffered = False
    while args and args[0] == "-u":
        unbuffered, args = True, args[1:]
    return unbuffered, args


def _forkable(request: dict, zygote_env: dict) -> bool:
    _, args = _program(request["args"])
    if not args or (args[0].startswith("-") and args[0] not in ("-c", "-m")) or (args[0] in ("-c", "-m") and len(args) < 2):
        return False
    env = request["env"]
    return all(_normal(k, env.get(k)) == _normal(k, v) for k, v in zygote_env.items())


def _normal(name: str, value: str | None):
    """``value`` as the imports read it: a search path's distinct entries, in order."""
    if name == "PYTHONPATH" and value is not None:
        return tuple(dict.fromkeys(os.path.abspath(p) for p in value.split(os.pathsep) if p))
    return value


def _become(request: dict, fds: list[int]) -> None:
    """In the forked process: take the launcher's streams, namespace, cwd and environment; run."""
    import ctypes
    import runpy
    import tempfile

    global _COMMAND
    _COMMAND = True
    code = 1
    try:
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        netns = fds[3]
        if os.stat(f"/proc/self/fd/{netns}").st_ino != os.stat("/proc/self/ns/net").st_ino:
            if ctypes.CDLL(None, use_errno=True).setns(netns, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns into the launcher's network namespace")
        for fd in fds:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR is the command's, not the zygote's
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        unbuffered, args = _program(request["args"])
        _reopen_streams(unbuffered or bool(os.environ.get("PYTHONUNBUFFERED")))
        if args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            sys.path[0] = ""
            code_object = compile(args[1], "<string>", "exec")
            main = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(code_object, main)
        elif args[0] == "-m":
            sys.argv = [args[1], *args[2:]]  # runpy puts the module's path in argv[0]
            sys.path[0] = os.getcwd()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if exit.code is not None and not isinstance(exit.code, int):
            print(exit.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    sys.exit(code)


def _reopen_streams(unbuffered: bool) -> None:
    """New ``sys.stdin/stdout/stderr`` on fds 0-2, buffered as Python buffers them at start-up."""
    def stream(fd, mode):
        tty = os.isatty(fd)
        raw = io.FileIO(fd, mode, closefd=False)
        if mode == "rb":
            return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")
        buffered = io.BufferedWriter(raw)
        errors = "backslashreplace" if fd == 2 else "strict"
        return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, line_buffering=tty or fd == 2,
                                write_through=unbuffered)

    sys.stdin = sys.__stdin__ = stream(0, "rb")
    sys.stdout = sys.__stdout__ = stream(1, "wb")
    sys.stderr = sys.__stderr__ = stream(2, "wb")


_launchers = {}  # kind -> (launcher path, socket path)


def wait_ready(timeout: float, kind: str = "bigkeras") -> bool:
    """Whether this process's zygote of ``kind`` is listening (it imports for a few seconds), waiting up to
    ``timeout`` s."""
    import time

    python(kind)
    deadline = time.monotonic() + timeout
    while not os.path.exists(_launchers[kind][1]):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def python(kind: str = "bigkeras") -> str:
    """The launcher to use in place of ``sys.executable``, starting this process's zygote of ``kind``
    (a key of ``PRELOAD``) on first use.

    The zygote is stopped (with any monitor still running) when this process exits; until it has
    imported everything (a few seconds), launchers run the real interpreter.
    """
    if kind not in _launchers:
        import atexit
        import shutil
        import subprocess
        import tempfile

        folder = tempfile.mkdtemp(prefix=f"bigkeras-warm-{kind}-")
        socket_path = os.path.join(folder, "zygote.sock")
        with open(os.path.join(folder, "zygote.log"), "wb") as log:
            zygote = subprocess.Popen([sys.executable, os.path.abspath(__file__), socket_path, kind],
                                      stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def stop():
            _kill_group(zygote.pid)
            zygote.wait()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)
        _launchers[kind] = (write_launcher(os.path.join(folder, "python"), socket_path), socket_path)
    return _launchers[kind][0]


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
