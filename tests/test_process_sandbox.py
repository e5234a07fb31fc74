"""The process sandbox contains whatever a candidate does, and keeps working after it.

Every hostile case checks three things a user relies on: the error kind the archive
will store, that the same pool still evaluates a good candidate correctly right
after, and that no process is left behind. This module makes the test process a
child subreaper, so anything that escaped the runners would be reparented here and
show up among our descendants.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.conftest import live_descendants, reap_adopted_zombies, unavailable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

HARNESS = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
GOOD = "def f(x):\n    return x * 2\n"
LIMITS = Limits(timeout_s=2.0, cpu_s=5, memory_mb=512, max_processes=16, max_file_mb=1,
                max_output_bytes=100_000)
PR_SET_CHILD_SUBREAPER = 36




@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    reap_adopted_zombies()


def harness_job(tmp_path: Path) -> HarnessJob:
    """``HARNESS`` in ``tmp_path`` on the instances 1, 2, 3."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    return HarnessJob(key=f"test/{tmp_path.name}", harness_path=harness, instances=[1, 2, 3])


@pytest.fixture
def job(tmp_path: Path) -> HarnessJob:
    return harness_job(tmp_path)


def sandbox_of(pool_size: int) -> Iterator[ProcessSandbox]:
    """Body of the process-sandbox test files' ``sandbox`` fixtures: a sandbox that,
    once shut down after the test, must have left no process behind."""
    backend = ProcessSandbox(pool_size=pool_size)
    yield backend
    backend.shutdown()
    assert live_descendants() == set(), "processes left behind after close()"


@pytest.fixture
def sandbox() -> Iterator[ProcessSandbox]:
    yield from sandbox_of(pool_size=2)


def run(backend: ProcessSandbox, code: str, job: HarnessJob, limits: Limits = LIMITS) -> RawOutput:
    return asyncio.run(backend.run(code, job, limits))


def assert_still_works(backend: ProcessSandbox, job: HarnessJob) -> None:
    """The pool evaluates a good candidate next, and nothing else is running."""
    result = run(backend, GOOD, job)
    assert result.ok, result
    assert result.output == [2, 4, 6]
    assert live_descendants() == set(backend.runner_pids())


def test_good_candidate_returns_output_and_runner_is_reused(sandbox, job):
    code = ("import os\nimport numpy as np\n"
            "def f(x):\n    return [int(np.int64(x) * 3), os.getcwd()]\n")
    first = run(sandbox, code, job)
    assert first.ok and first.error is None, first
    assert [value for value, _cwd in first.output] == [3, 6, 9]
    assert not os.path.exists(first.output[0][1]), "the work dir must be deleted"
    pids = sandbox.runner_pids()
    second = sandbox.run_sync(GOOD, job, LIMITS)  # another event loop, same runner
    assert second.output == [2, 4, 6]
    assert sandbox.runner_pids() == pids


def test_infinite_loop_times_out_near_the_limit(sandbox, job):
    limits = Limits(timeout_s=1.5, cpu_s=30, memory_mb=512)
    start = time.monotonic()
    result = run(sandbox, "def f(x):\n    while True:\n        pass\n", job, limits)
    assert result.error is ErrorKind.TIMEOUT, result
    assert result.message == "wall-clock limit of 1.5 s exceeded (problem.timeout_s)"
    # Stopped by the limit rather than left running (a loose bound, not a speed target).
    assert time.monotonic() - start < 10
    assert_still_works(sandbox, job)


def test_cpu_limit_is_a_timeout(sandbox, job):
    limits = Limits(timeout_s=20, cpu_s=1, memory_mb=512)
    start = time.monotonic()
    result = run(sandbox, "def f(x):\n    while True:\n        pass\n", job, limits)
    assert result.error is ErrorKind.TIMEOUT, result
    assert result.message.startswith("CPU limit of 1 s exceeded (problem.cpu_s)"), result
    assert time.monotonic() - start < 15  # the CPU limit fired, not the 20 s wall clock
    assert_still_works(sandbox, job)


@pytest.mark.parametrize("hog", [
    "def f(x):\n    return len(bytearray(10 ** 11))\n",
    "def f(x):\n    hog = []\n    while True:\n        hog.append(' ' * 10 ** 6)\n",
])
def test_memory_hog_is_memory(sandbox, job, hog):
    limits = Limits(timeout_s=10, cpu_s=10, memory_mb=256)
    result = run(sandbox, hog, job, limits)
    assert result.error is ErrorKind.MEMORY, result
    assert_still_works(sandbox, job)


def test_fork_bomb_is_contained(sandbox, job):
    bomb = ("import os, time\n"
            "def f(x):\n"
            "    while True:\n"
            "        try:\n"
            "            os.fork()\n"
            "        except OSError:\n"
            "            time.sleep(0.01)\n")
    limits = Limits(timeout_s=2, cpu_s=5, memory_mb=512, max_processes=16)
    result = run(sandbox, bomb, job, limits)
    assert result.error in (ErrorKind.CRASH, ErrorKind.TIMEOUT), result
    assert subprocess.run(["true"], check=False).returncode == 0, "the host cannot fork"
    assert_still_works(sandbox, job)


def test_huge_file_write_is_stopped(sandbox, job):
    # The work dir is the only place the candidate may write; it reports the size.
    code = ("import os, sys\n"
            "def f(x):\n"
            "    try:\n"
            "        with open('big.bin', 'wb') as out:\n"
            "            for _ in range(100):\n"
            "                out.write(b'\\0' * (1 << 20))\n"
            "    finally:\n"
            "        print('written', os.path.getsize('big.bin'), file=sys.stderr)\n")
    result = run(sandbox, code, job, Limits(timeout_s=10, cpu_s=10, max_file_mb=1))
    assert result.error is ErrorKind.CRASH, result
    # (the write fails with EFBIG; the message names the setting that raises the limit)
    assert result.message.startswith("OSError: [Errno 27] File too large (at candidate.py:")
    assert result.message.endswith("; the file size limit is 1 MB (sandbox.max_file_mb)")
    written = int(result.stderr_tail.split("written ", 1)[1].split()[0])
    assert 0 < written <= 1 << 20
    assert_still_works(sandbox, job)


def test_host_environment_does_not_leak(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_TEST_SECRET", "s3cret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    job = HarnessJob(key="env", harness_path=harness, instances=[os.getpid()])
    code = ("import os\n"
            "def f(host_pid):\n"
            "    try:\n"
            "        host = open(f'/proc/{host_pid}/environ', 'rb').read().decode('latin-1')\n"
            "    except OSError:\n"
            "        host = 'denied'\n"
            "    return [dict(os.environ), host]\n")
    result = run(sandbox, code, job)
    assert result.ok, result
    environ, host_environ = result.output[0]
    assert "EVO_TEST_SECRET" not in environ and "OPENAI_API_KEY" not in environ
    assert "s3cret" not in repr(environ)
    assert set(environ) <= {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                            "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    if os.geteuid() == 0:  # the candidate runs as nobody and cannot read our environ
        assert host_environ == "denied"
    shadow = run(sandbox, "def f(x):\n    return open('/etc/shadow').read()\n", job)
    if os.geteuid() == 0:
        assert shadow.error is ErrorKind.CRASH and "Permission" in shadow.message


def test_network_is_cut(sandbox, job):
    assert_still_works(sandbox, job)
    if not sandbox.network_isolated:
        unavailable("this kernel gave the runner no network namespace")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = ("import socket\n"
                "def f(x):\n"
                "    try:\n"
                f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
                "        return 'connected'\n"
                "    except OSError:\n"
                "        return 'blocked'\n")
        result = run(sandbox, code, job)
    assert result.output == ["blocked"] * 3, result
    assert_still_works(sandbox, job)


def test_background_daemon_does_not_survive(sandbox, job):
    # The daemon says it is alive on a pipe (no host folder is writable in there).
    code = ("import os, time\n"
            "def f(x):\n"
            "    if x != 1:\n"
            "        return x\n"
            "    r, w = os.pipe()\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        if os.fork() == 0:\n"
            "            os.write(w, b'alive')\n"
            "            while True:\n"
            "                time.sleep(0.05)\n"
            "        os._exit(0)\n"
            "    os.close(w)\n"
            "    return os.read(r, 5).decode()\n")
    result = run(sandbox, code, job)
    assert result.ok, result
    assert result.output == ["alive", 2, 3], "the daemon never ran, so this test proves nothing"
    time.sleep(0.2)
    assert live_descendants() == set(sandbox.runner_pids()), "the daemon outlived the evaluation"
    assert_still_works(sandbox, job)


def test_syntax_error_is_syntax(sandbox, job):
    result = run(sandbox, "def f(x) return x\n", job)
    assert result.error is ErrorKind.SYNTAX and "SyntaxError" in result.message
    assert_still_works(sandbox, job)


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_early_exit_is_crash(sandbox, job, exit_call):
    result = run(sandbox, f"import os, sys\ndef f(x):\n    {exit_call}\n", job)
    assert result.error is ErrorKind.CRASH, result
    assert "exited early" in result.message
    assert_still_works(sandbox, job)


def test_exception_is_crash_with_message(sandbox, job):
    result = run(sandbox, "def f(x):\n    raise ValueError('boom')\n", job)
    assert result.error is ErrorKind.CRASH
    assert "ValueError: boom" in result.message and "candidate.py:2" in result.message
    assert "ValueError: boom" in result.stderr_tail
    assert_still_works(sandbox, job)


def test_oversized_or_unserialisable_output_is_invalid(sandbox, job):
    big = run(sandbox, "def f(x):\n    return 'x' * 200_000\n", job)
    assert big.error is ErrorKind.INVALID_OUTPUT, big
    assert big.message == "output larger than 100000 bytes (sandbox.max_output_mb)"
    odd = run(sandbox, "def f(x):\n    return object()\n", job)
    assert odd.error is ErrorKind.INVALID_OUTPUT, odd
    nan = run(sandbox, "def f(x):\n    return float('nan')\n", job)
    assert nan.ok and nan.output[0] != nan.output[0]  # NaN arrives; score.py rejects it
    assert_still_works(sandbox, job)


def test_fake_result_on_stdout_changes_nothing(sandbox, job):
    frame = b'{"type": "result", "ok": true, "output_json": "[999]"}'
    code = ("import os, struct, sys\n"
            "def f(x):\n"
            f"    fake = struct.pack('>I', {len(frame)}) + {frame!r}\n"
            "    print('FAKE [999]')\n"
            "    sys.__stdout__.write('FAKE R[999]\\n')\n"
            "    os.write(1, fake)\n"
            "    os.write(2, fake)\n"
            "    return x\n")
    result = run(sandbox, code, job)
    assert result.ok and result.output == [1, 2, 3], result
    assert "FAKE" in result.stderr_tail
    assert_still_works(sandbox, job)


def test_runner_killed_from_outside_is_replaced(sandbox, job):
    assert_still_works(sandbox, job)
    for pid in sandbox.runner_pids():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    assert_still_works(sandbox, job)

    async def kill_mid_evaluation() -> RawOutput:
        task = asyncio.ensure_future(
            sandbox.run("import time\ndef f(x):\n    time.sleep(5)\n", job, LIMITS))
        await asyncio.sleep(0.5)
        for pid in sandbox.runner_pids():
            os.kill(pid, signal.SIGKILL)
        return await task

    result = asyncio.run(kill_mid_evaluation())
    assert result.error is ErrorKind.SANDBOX, result
    time.sleep(0.2)  # the orphaned candidate dies of its parent-death signal
    assert_still_works(sandbox, job)


FAKE_RUNNER = """
import json, os, struct, subprocess, sys, time
def send(message):
    body = json.dumps(message).encode()
    os.write(1, struct.pack(">I", len(body)) + body)
def receive():
    size = struct.unpack(">I", os.read(0, 4))[0]
    body = b""
    while len(body) < size:
        body += os.read(0, size - len(body))
    return json.loads(body)
send({"type": "hello", "network_isolated": False})
receive()  # setup
receive()  # the instances
send({"type": "ready", "ok": True, "message": ""})
receive()  # eval
"""


@pytest.mark.parametrize(("misbehaviour", "expected"), [
    ("os.write(1, b'\\xff' * 64)\ntime.sleep(60)", ErrorKind.SANDBOX),
    ("subprocess.Popen(['sleep', '60'], start_new_session=True)\ntime.sleep(60)",
     ErrorKind.TIMEOUT),
    ("sys.exit(0)", ErrorKind.SANDBOX),
])
def test_misbehaving_runner_is_killed_with_its_processes(tmp_path, job, misbehaviour, expected):
    fake = tmp_path / "fake_runner.py"
    fake.write_text(FAKE_RUNNER + misbehaviour + "\n")
    backend = ProcessSandbox(pool_size=1, runner_path=fake, grace_s=0.5)
    try:
        start = time.monotonic()
        result = run(backend, GOOD, job, Limits(timeout_s=0.5))
        assert result.error is expected, result
        assert time.monotonic() - start < 15  # replaced, not waited on forever
        assert live_descendants() == set(), "the stuck runner or its child survived"
    finally:
        backend.shutdown()


def test_broken_harness_is_a_sandbox_error(sandbox, tmp_path):
    harness = tmp_path / "broken_harness.py"
    harness.write_text("def run(candidate, instances:\n")
    job = HarnessJob(key="broken", harness_path=harness, instances=[1])
    result = run(sandbox, GOOD, job)
    assert result.error is ErrorKind.SANDBOX and "broken_harness.py" in result.message


def test_close_ends_running_evaluations_at_once(sandbox, job):
    async def close_mid_evaluation() -> RawOutput:
        task = asyncio.ensure_future(
            sandbox.run("import time\ndef f(x):\n    time.sleep(30)\n", job, Limits(timeout_s=30)))
        await asyncio.sleep(0.5)
        await sandbox.close()
        return await task

    start = time.monotonic()
    result = asyncio.run(close_mid_evaluation())
    assert result.error is ErrorKind.SANDBOX, result
    assert time.monotonic() - start < 15  # ended, not left to sleep its 30 s
    assert live_descendants() == set()
    assert_still_works(sandbox, job)  # a later run starts fresh runners


def test_concurrent_runs_share_a_bounded_pool(sandbox, job):
    code = "import time\ndef f(x):\n    time.sleep(0.2)\n    return x\n"

    async def many() -> list[RawOutput]:
        return await asyncio.gather(*(sandbox.run(code, job, LIMITS) for _ in range(5)))

    results = asyncio.run(many())
    assert all(r.ok and r.output == [1, 2, 3] for r in results), results
    assert len(sandbox.runner_pids()) <= 2
    assert_still_works(sandbox, job)


@pytest.mark.parametrize("own_process", [True, False])
def test_candidate_is_a_regular_module(sandbox, job, own_process):
    code = ("import inspect, sys\n"
            "def f(x):\n"
            "    me = sys.modules[__name__]\n"
            "    return [__name__, __spec__.name, __spec__.origin == __file__, me.f is f,\n"
            "            __loader__.get_source(__name__) == inspect.getsource(me),\n"
            "            inspect.getsource(f).splitlines()[0]]\n")
    result = run(sandbox, code, dataclasses.replace(job, candidate_process=own_process))
    assert result.ok, result
    assert result.output[0] == ["candidate", "candidate", True, True, True, "def f(x):"]


@pytest.mark.parametrize("own_process", [False, True], ids=["beside_harness", "own_process"])
def test_each_candidate_gets_fresh_randomness_and_working_threads(sandbox, job, own_process):
    """The runner forks without CPython's at-fork hooks (``runner_os.fork_lean``): a
    candidate must still see what a fork with them gives it. ``random`` starts from
    a state no earlier evaluation had, the process is its own main thread, and the
    threads it starts run and are counted."""
    code = ("import os, random, threading\n"
            "def f(x):\n"
            "    box, go = [], threading.Event()\n"
            "    worker = threading.Thread(target=lambda: go.wait() and box.append(os.getpid()))\n"
            "    worker.start()\n"
            "    started = threading.active_count()\n"
            "    go.set()\n"
            "    worker.join()\n"
            "    return [random.getrandbits(64), box == [os.getpid()], started,\n"
            "            threading.current_thread() is threading.main_thread()]\n")
    job = dataclasses.replace(job, candidate_process=own_process, instances=[1])
    outputs = [run(sandbox, code, job) for _ in range(4)]
    assert all(result.ok for result in outputs), outputs
    draws = [result.output[0][0] for result in outputs]
    assert len(set(draws)) == len(draws), f"two evaluations drew the same numbers: {draws}"
    for result in outputs:
        assert result.output[0][1:] == [True, 2, True], result.output
