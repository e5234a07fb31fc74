"""The hostile candidates of tests/test_adversarial.py: the ``Attack`` record, its
builder, the extra per-case checks on the host, and the ``ATTACKS`` list itself."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evoengine.evaluation.result import ErrorKind, EvaluationResult
from tests.adversarial_sources import (
    BEST_FIT,
    FIND_HARNESS,
    FIRST_FIT_DECREASING,
    READ_INSTANCES,
)

if TYPE_CHECKING:
    from tests.adversarial_bench import Host

TIMEOUT, MEMORY, CRASH = ErrorKind.TIMEOUT, ErrorKind.MEMORY, ErrorKind.CRASH
INVALID, SYNTAX = ErrorKind.INVALID_OUTPUT, ErrorKind.SYNTAX


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    code: str  # a string.Template over Host.fields()
    kinds: frozenset[ErrorKind]  # the error kinds that count as stopped
    says: tuple[str, ...] = ()  # one of these must appear in the feedback
    # Cases that only lie may instead be valid, scoring exactly this reference.
    true_score: str | None = None
    check: Callable[[Host, EvaluationResult], None] | None = None
    xfail: tuple[tuple[str, str], ...] = ()  # (backend, reason): a real weakness


def _host_can_fork(_host: Host, _result: EvaluationResult) -> None:
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0


def _feedback_bounded(_host: Host, result: EvaluationResult) -> None:
    assert len(result.feedback) < 64 * 1024, f"feedback of {len(result.feedback)} chars"


def _read_failed(marker: str) -> Callable[[Host, EvaluationResult], None]:
    def check(_host: Host, result: EvaluationResult) -> None:
        assert marker not in result.feedback, "the candidate read the file"
    return check


def _daemon_gone(host: Host, result: EvaluationResult) -> None:
    log = host.daemon_log
    if "daemon planted, sleeping" in result.feedback:
        return  # the beacon folder is not visible in there (a container): see the leftovers
    assert "daemon planted, logging" in result.feedback
    assert log.exists(), "the daemon said it wrote its beacon, but the host sees none"
    size = log.stat().st_size
    time.sleep(0.5)
    assert log.stat().st_size == size, "the daemon outlived the evaluation"


def _no_offline_forgery(host: Host, result: EvaluationResult) -> None:
    assert result.score != host.reference["offline_ffd"], "the forged packing was scored"


def attack(name: str, code: str, *kinds: ErrorKind, best_fit: bool = True,
           **options: Any) -> Attack:
    return Attack(name, code + (BEST_FIT if best_fit else ""), frozenset(kinds), **options)


ATTACKS = [
    # ---- resource exhaustion
    attack("infinite_loop", """
def priority(item, bins):
    while True:
        pass
""", TIMEOUT, best_fit=False),
    attack("numpy_matmul_spin", """
import numpy as np

def priority(item, bins):
    a = np.random.default_rng(0).random((1500, 1500))
    while True:
        a = a @ a
        a /= np.abs(a).max()
""", TIMEOUT, best_fit=False),
    attack("memory_bomb", """
import numpy as np

_hog = []
while True:
    _hog.append(np.ones(8 << 20))  # 64 MB, every page written
""", MEMORY),
    attack("fork_bomb", """
import os
import time

def priority(item, bins):
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
""", CRASH, TIMEOUT, best_fit=False, check=_host_can_fork),
    attack("thread_bomb", """
import threading
import time

_threads = []
while True:
    _thread = threading.Thread(target=time.sleep, args=(3600,), daemon=True)
    _thread.start()
    _threads.append(_thread)
""", CRASH, TIMEOUT, check=_host_can_fork),
    attack("deep_recursion", """
import sys

sys.setrecursionlimit(10 ** 8)

def _deeper(n):
    return list(map(_deeper, [n + 1]))  # through C frames: the C stack overflows

_deeper(0)
""", CRASH),
    attack("fill_workdir_one_file", """
_chunk = b"\\0" * (1 << 20)
with open("$MARK-fill.bin", "wb") as _out:
    for _ in range(4096):  # 4 GiB unless stopped
        _out.write(_chunk)
""", CRASH, says=("File too large", "No space", "file size limit")),
    attack("fill_workdir_many_files", """
_chunk = b"\\0" * (1 << 20)
for _i in range(256):  # 256 files of 4 MiB, each below max_file_mb: 1 GiB, > memory_mb
    with open(f"$MARK-fill-{_i}.bin", "wb") as _out:
        for _ in range(4):
            _out.write(_chunk)
""", CRASH, says=("No space", "Disk quota", "File too large")),
    # ---- escaping
    attack("write_root", """
with open("$ROOT_MARKER", "w") as _out:
    _out.write("escaped")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_tmp", """
with open("$TMP_MARKER", "w") as _out:
    _out.write("escaped")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_beside_workdir", """
import os

# The folder that holds every evaluation's work dir: a file left there would be
# seen by later candidates.
with open(os.path.join(os.path.dirname(os.getcwd()), "$MARK-beside"), "w") as _out:
    _out.write("left for the next candidate")
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("write_harness", FIND_HARNESS + """
import glob
import os

_harness = _find_harness()
_paths = [_harness.__file__] if _harness is not None else []
_paths += [p for p in ["$HARNESS_PATH", *glob.glob("/opt/evoengine/job/*.py")]
           if os.path.exists(p)]
if not _paths:
    raise RuntimeError("the attack found no harness file to write")
for _path in _paths:
    with open(_path, "a") as _out:
        _out.write("\\n# tampered\\n")
    os.utime(_path, (0, 0))
""", CRASH, says=("PermissionError", "Read-only file system")),
    attack("read_etc_shadow", """
with open("/etc/shadow") as _f:
    raise RuntimeError("read /etc/shadow: " + _f.read())
""", CRASH, says=("PermissionError", "FileNotFoundError"),
           check=_read_failed("read /etc/shadow:")),
    attack("read_host_root_only_file", """
with open("$SECRET_FILE") as _f:
    raise RuntimeError("read the host file: " + _f.read())
""", CRASH, says=("PermissionError", "FileNotFoundError"),
           check=_read_failed("read the host file:")),
    attack("read_environment_keys", """
import os

_found = {f"env {k}": v for k, v in os.environ.items() if "KEY" in k or "SECRET" in k}
for _pid in os.listdir("/proc"):
    if _pid.isdigit():
        try:
            with open(f"/proc/{_pid}/environ", "rb") as _f:
                _pairs = _f.read().decode("latin-1").split("\\0")
        except OSError:
            continue
        _found.update({f"pid {_pid}": p for p in _pairs if "KEY" in p or "SECRET" in p})
os.environ["EVO_ADV_PLANTED"] = "left for the next candidate"
print("found:", _found)
raise RuntimeError(f"found {len(_found)} keys: {_found}")
""", CRASH, says=("found",)),
    attack("tcp_to_host_loopback", """
import socket

with socket.create_connection(("127.0.0.1", $PORT), timeout=1) as _s:
    _s.sendall(b"escaped")
""", CRASH),
    attack("tcp_to_public_address", """
import socket

socket.create_connection(("1.1.1.1", 53), timeout=1).close()
""", CRASH),
    attack("dns_lookup", """
import socket

socket.getaddrinfo("$DNS_NAME", 443)
""", CRASH, says=("gaierror",)),
    attack("daemon_outlives_run", """
import os
import time

_r, _w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        _log = os.path.join("$BEACON_DIR", "$MARK-daemon.log")
        _said = False
        while True:  # a host-visible beacon where there is one, else just living on
            try:
                with open(_log, "a") as _out:
                    _out.write("alive\\n")
                _logged = b"logging"
            except OSError:
                _logged = b"sleeping"
            if not _said:
                os.write(_w, _logged)
                _said = True
            time.sleep(0.05)
    os._exit(0)
os.close(_w)
_up = os.read(_r, 16).decode()
raise RuntimeError(f"daemon planted, {_up}" if _up else "the daemon did not start")
""", CRASH, says=("daemon planted",), check=_daemon_gone),
    # ---- fighting the runner
    attack("ignore_sigterm", """
import signal
import time

for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):
    signal.signal(_sig, signal.SIG_IGN)

def priority(item, bins):
    while True:
        time.sleep(0.1)
""", TIMEOUT, best_fit=False),
    attack("signal_the_runner", """
import os
import signal

os.kill(os.getppid(), signal.SIGINT)  # a Python runner dies of KeyboardInterrupt
os.kill(os.getppid(), signal.SIGTERM)
""", CRASH, true_score="best_fit", says=("PermissionError",)),
    attack("close_stdout_stderr", """
import os
import numpy as np

os.close(1)
os.close(2)

def priority(item, bins):
    print("placing", item)  # stdout is gone
    return -(bins - item)
""", CRASH, best_fit=False, says=("Bad file descriptor",)),
    attack("close_every_fd", """
import os

os.closerange(0, 1 << 16)  # the result channel too
""", CRASH),
    attack("flood_stdout_stderr", """
import sys

_flood = "x" * (50 << 20)
sys.stdout.write(_flood)
sys.stderr.write(_flood)
sys.stdout.flush()
sys.stderr.flush()
""", CRASH, INVALID, check=_feedback_bounded),
    attack("fake_result_line", """
import json
import sys

_perfect = json.dumps({"valid": True, "score": 0.0, "error": None, "metrics": {}})
for _stream in (sys.stdout, sys.stderr, sys.__stdout__):
    print('{"score": 0}', file=_stream)
    print(_perfect, file=_stream)
    print(json.dumps([[0] * 500, [0] * 500]), file=_stream)
    _stream.flush()

def priority(item, bins):
    return bins - item  # worst fit: a fresh bin for every item
""", INVALID, best_fit=False, true_score="worst_fit"),
    attack("harness_patched_all_in_bin_0", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [0] * len(instance["items"]) for instance in instances]
""", INVALID, true_score="best_fit", says=("capacity",)),
    attack("harness_patched_negative_indices", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [-1] * len(instance["items"]) for instance in instances]
""", INVALID, true_score="best_fit", says=("out of range",)),
    attack("harness_patched_float_indices", FIND_HARNESS + """
(_find_harness() or types.SimpleNamespace()).run = lambda candidate, instances: [
    [float("nan")] + [float(i) for i in range(1, len(instance["items"]))]
    for instance in instances]
""", INVALID, true_score="best_fit", says=("float",)),
    attack("harness_patched_offline_packing", FIND_HARNESS + FIRST_FIT_DECREASING + """
def _offline(candidate, instances):
    return [_first_fit_decreasing(instance) for instance in instances]

(_find_harness() or types.SimpleNamespace()).run = _offline
""", INVALID, true_score="best_fit", check=_no_offline_forgery),
    attack("read_instances_from_priority", FIND_HARNESS + READ_INSTANCES, true_score="best_fit",
           best_fit=False),
    attack("numpy_patched", """
import numpy as np

_asarray = np.asarray
# The harness reads priorities through np.asarray: every bin ties, so first fit wins.
np.asarray = lambda a, *args, **kwargs: _asarray(a, *args, **kwargs) * 0
""", INVALID, true_score="best_fit"),
    # ---- bad results
    attack("priority_nan", """
import numpy as np

def priority(item, bins):
    return np.full(bins.shape, np.nan)
""", CRASH, INVALID, best_fit=False, says=("priority nan", "must be finite")),
    attack("priority_inf", """
import numpy as np

def priority(item, bins):
    return np.full(bins.shape, np.inf)
""", CRASH, INVALID, best_fit=False, says=("priority inf", "must be finite")),
    attack("priority_wrong_shape", """
import numpy as np

def priority(item, bins):
    return np.zeros(bins.size + 1)
""", CRASH, INVALID, best_fit=False, says=("shape",)),
    attack("priority_wrong_type", """
def priority(item, bins):
    return ["high"] * len(bins)
""", CRASH, INVALID, best_fit=False, says=("dtype",)),
    # ---- broken code
    attack("sys_exit_at_import", """
import sys

sys.exit(0)
""", CRASH, says=("exit",)),
    attack("os_exit_mid_run", """
import os

_calls = [0]

def priority(item, bins):
    _calls[0] += 1
    if _calls[0] == 100:
        os._exit(0)
    return -(bins - item)
""", CRASH, best_fit=False, says=("exit",)),
    attack("missing_module", """
import evoadv_no_such_module  # noqa: F401
""", CRASH, says=("ModuleNotFoundError",)),
    attack("syntax_error", """
def priority(item, bins)
    return -(bins - item)
""", SYNTAX, best_fit=False, says=("SyntaxError",)),
    attack("sleep_past_timeout", """
import time

def priority(item, bins):
    time.sleep(60)
""", TIMEOUT, best_fit=False),
]
