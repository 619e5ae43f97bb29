"""tests/warm.py: a command started through the launcher behaves as ``python`` would run it."""

import os
import signal
import subprocess
import time

import pytest

from tests import warm
from tests.cluster import ROOT

FORKED = "import sys; print('forked' if 'bigkeras' in sys.modules else 'fresh')"


@pytest.fixture(scope="module")
def launcher():
    assert warm.wait_ready(180), "the zygote did not start: see zygote.log beside the launcher"
    return warm.python()


def run(launcher, *args, **kwargs):
    return subprocess.run([launcher, *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_a_command_gets_its_argv_cwd_environment_streams_and_exit_status(launcher, tmp_path):
    code = ("import os, sys, tempfile; print(sys.argv, os.getcwd(), os.environ['WARM_TEST'], tempfile.gettempdir()); "
            "print(sys.stdin.read().upper(), file=sys.stderr); sys.exit(3)")
    done = run(launcher, "-c", code, "a", "b", cwd=tmp_path, input="from stdin",
               env={**os.environ, "WARM_TEST": "yes", "TMPDIR": str(tmp_path)})
    assert done.returncode == 3
    assert done.stdout.strip() == f"['-c', 'a', 'b'] {tmp_path} yes {tmp_path}"
    assert done.stderr.strip().endswith("FROM STDIN")
    assert run(launcher, "-c", FORKED).stdout.strip() == "forked"
    assert run(launcher, "-u", "-c", FORKED).stdout.strip() == "forked"  # -u: unbuffered streams, still forked


def test_scripts_and_modules_run_as_main(launcher, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(__name__, sys.argv[1:], sys.path[0])\nraise ValueError('bad value')\n")
    done = run(launcher, str(script), "x")
    assert done.returncode == 1 and done.stdout.strip() == f"__main__ ['x'] {tmp_path}"
    assert "ValueError: bad value" in done.stderr
    listed = run(launcher, "-m", "bigkeras.cli", "list", "mlp*", cwd=ROOT)
    assert listed.returncode == 0 and "mlp_tiny" in listed.stdout


def test_signals_reach_the_process_and_its_death_reaches_the_caller(launcher):
    assert run(launcher, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)").returncode == -signal.SIGKILL
    proc = subprocess.Popen([launcher, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    proc.terminate()
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_killing_the_launcher_kills_the_process_and_what_it_started(launcher, tmp_path):
    pids = tmp_path / "pids"
    code = (f"import os, subprocess, time; child = subprocess.Popen(['sleep', '600']); "
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); time.sleep(600)")
    proc = subprocess.Popen([launcher, "-c", code])
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    forked, sleeper = map(int, pids.read_text().split())
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid) for pid in (forked, sleeper)):
        assert time.monotonic() < deadline, "the forked process or its child outlived the launcher"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


def test_the_verify_zygote_has_tensorflow_and_neither_keras_nor_bigkeras():
    assert warm.wait_ready(180, "verify")
    code = ("import sys; print(sorted(m for m, mod in sys.modules.items() if m.split('.')[0] in "
            "('keras', 'tf_keras', 'bigkeras') and mod is not None), 'tensorflow' in sys.modules)")
    assert run(warm.python("verify"), "-c", code).stdout.strip() == "[] True"


def test_what_the_fork_would_get_wrong_runs_the_real_interpreter(launcher, tmp_path):
    other_env = {**os.environ, "KERAS_BACKEND": "numpy"}  # read while importing keras: the zygote's is tensorflow
    assert run(launcher, "-c", FORKED, env=other_env).stdout.strip() == "fresh"
    assert run(launcher, "-X", "utf8", "-c", FORKED).stdout.strip() == "fresh"  # an option the launcher does not know
    alone = warm.write_launcher(str(tmp_path / "python"), str(tmp_path / "no-zygote.sock"))
    done = run(alone, "-c", FORKED)
    assert done.returncode == 0 and done.stdout.strip() == "fresh"  # no zygote listening
