"""The process sandbox keeps files and signals to itself (runner_os.py, runner_reap.py).

In its own mount namespace the runner makes the host's shared folders read-only and
puts its work dirs on a capped tmpfs, wipes them after every evaluation, and ignores
the signals a candidate could send it, while the candidate keeps Python's usual ones.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.conftest import unavailable
from tests.test_process_sandbox import (
    _subreaper,  # noqa: F401 - escaped processes come here
    assert_still_works,
    harness_job,
    run,
    sandbox_of,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.fixture
def job(tmp_path: Path) -> HarnessJob:
    return harness_job(tmp_path)


@pytest.fixture
def sandbox() -> Iterator[ProcessSandbox]:
    yield from sandbox_of(pool_size=1)


def test_shared_folders_are_read_only_and_the_work_dirs_capped(job):
    backend = ProcessSandbox(pool_size=1, tmpfs_mb=16)
    try:
        assert_still_works(backend, job)
        if not backend.files_isolated:
            unavailable("this kernel gave the runner no private mount namespace")
        marker = Path(tempfile.gettempdir()) / f"evo-test-{os.getpid()}-escaped"
        places = [str(marker)] + [f"{d}/evo-test-escaped" for d in ("/var/tmp", "/dev/shm")
                                  if os.path.isdir(d)]
        code = ("def f(x):\n"
                "    errors = []\n"
                f"    for path in {places!r}:\n"
                "        try:\n"
                "            open(path, 'w').close()\n"
                "            errors.append('written')\n"
                "        except OSError as exc:\n"
                "            errors.append(exc.strerror)\n"
                "    return errors\n")
        result = run(backend, code, job)
        assert result.ok and result.output[0] == ["Read-only file system"] * len(places), result
        assert not marker.exists()
        # Many files, each within max_file_mb: together they outgrow the 16 MiB tmpfs.
        fill = ("def f(x):\n"
                "    for i in range(64):\n"
                "        with open(f'fill-{i}.bin', 'wb') as out:\n"
                "            out.write(bytes(1 << 20))\n")
        result = run(backend, fill, job)
        assert result.error is ErrorKind.CRASH and "No space left" in result.message, result
        assert all(os.listdir(root) == [] for root in backend.runner_roots())
        assert_still_works(backend, job)
    finally:
        backend.shutdown()


def test_nothing_is_left_for_the_next_candidate(sandbox, job):
    mess = ("import os\n"
            "def f(x):\n"
            "    os.makedirs(f'a{x}/b')\n"
            "    open(f'a{x}/b/c', 'w').close()\n"
            "    os.chmod(f'a{x}/b', 0)\n"
            "    os.chmod(f'a{x}', 0)\n"
            "    open(f'left-{x}', 'w').close()\n"
            "    return x\n")
    assert run(sandbox, mess, job).output == [1, 2, 3]
    look = "import os\ndef f(x):\n    return sorted(os.listdir('.'))\n"
    assert run(sandbox, look, job).output == [["candidate.py"]] * 3
    assert_still_works(sandbox, job)


def test_candidate_keeps_normal_signals_and_cannot_stop_the_runner(sandbox, job):
    assert_still_works(sandbox, job)
    pids = sandbox.runner_pids()
    code = ("import os, signal\n"
            "def f(x):\n"
            "    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM,\n"
            "                                               signal.SIGUSR1)]\n"
            "    assert handlers == [signal.default_int_handler, signal.SIG_DFL,\n"
            "                        signal.SIG_DFL], handlers\n"
            "    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):\n"
            "        try:\n"
            "            os.kill(os.getppid(), sig)\n"
            "        except PermissionError:\n"
            "            pass\n"
            "    if x == 3:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return x\n")
    result = run(sandbox, code, job)
    assert result.error is ErrorKind.CRASH and "KeyboardInterrupt" in result.message, result
    term = run(sandbox, "import os, signal\ndef f(x):\n    os.kill(os.getpid(), 15)\n", job)
    assert term.error is ErrorKind.CRASH and "SIGTERM" in term.message, term
    assert_still_works(sandbox, job)
    assert sandbox.runner_pids() == pids


@pytest.mark.parametrize("own_process", [True, False])
def test_candidate_gains_no_privileges_and_its_lines_survive_a_hard_crash(sandbox, job,
                                                                         own_process):
    code = ("import os\n"
            "def f(x):\n"
            "    status = open('/proc/self/status').read()\n"
            "    print('no_new_privs', status.split('NoNewPrivs:')[1].split()[0])\n"
            "    os.abort()\n")  # no flush at exit: only line buffering saves the line
    result = run(sandbox, code, dataclasses.replace(job, candidate_process=own_process))
    assert result.error is ErrorKind.CRASH and "SIGABRT" in result.message, result
    assert "no_new_privs 1" in result.stderr_tail, result
    assert_still_works(sandbox, job)
