"""Inside the process sandbox: the forked child that confines itself and then runs
one candidate through the harness: by default in a process of its own
(``runner_candidate.evaluate``, which uses the helpers here), or, for problems with
``candidate_process: false``, imported into this one (``evaluate``).

Why the child is built this way:

* it drops to ``nobody`` when the runner is root, so that RLIMIT_NPROC applies
  and host files readable only by root (``/etc/shadow``, ``/root``) stay closed;
* the interpreter may live where ``nobody`` cannot walk (pyenv under ``/root``),
  so before dropping it opens every ``sys.path`` folder as an ``O_PATH`` descriptor
  and imports through ``/proc/self/fd/N`` from then on: later imports (the standard
  library, ``numpy.random``) keep working while nothing else under ``/root`` opens;
* the result goes back on a pipe of its own, never on stdout, which is a file;
* every path out ends in ``os._exit``, so the child never runs the runner's loop;
* the runner ignores every signal it can (``ignore_signals``, here beside its
  counterpart), and whichever process runs the candidate puts the old dispositions
  back first, so the candidate sees Python's usual ones (a harness process of its
  own keeps ignoring them: the candidate, with the same uid, could send them).

Stdlib only, no engine imports (the same files serve inside sandbox images).
"""

from __future__ import annotations

import _signal
import contextlib
import json
import linecache
import mmap
import os
import resource
import signal
import sys
import types
from collections.abc import Callable
from importlib.machinery import ModuleSpec, SourceFileLoader
from typing import Any

from runner_channel import UnsendableValue, describe, print_traceback
from runner_os import (
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    PreparedPrctl,
    drop_capabilities,
    prctl,
)

NOBODY = 65534  # uid and gid the candidate runs as when the runner is root
# Signals the runner leaves alone: it cannot ignore the first two, ignoring SIGCHLD
# would reap its children behind its back, and the others harm nobody.
_KEEP_SIGNALS = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT,
                 signal.SIGWINCH, signal.SIGURG}

_EXIT = os._exit  # held here so a candidate that replaces os._exit cannot keep us alive
_owner_pid = 0  # the forked child; processes the candidate forks never write results
_reserve: mmap.mmap | None = None  # see limit_memory


def ignore_signals() -> dict[int, Any]:
    """Ignore every signal that could stop or end the runner; return the previous
    dispositions, which each forked child restores (``restore_signals``).

    A candidate that runs as our uid (Docker) can signal us: ignored, nothing
    happens, and as pid 1 of a PID namespace (a container) no signal from inside
    it reaches us at all, SIGKILL included. ``docker kill`` comes from outside.
    """
    saved = {}
    for sig in sorted(signal.valid_signals() - _KEEP_SIGNALS):
        try:
            saved[int(sig)] = signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError, RuntimeError):
            continue
    return saved


# What a fresh Python interpreter starts with; every other signal is SIG_DFL. In
# ``_signal``'s own terms (plain ints): see restore_signals.
_PYTHON_DISPOSITIONS = {int(signal.SIGINT): _signal.default_int_handler,
                        int(signal.SIGPIPE): _signal.SIG_IGN,
                        int(signal.SIGXFSZ): _signal.SIG_IGN}


def restore_signals(saved: dict[int, Any]) -> None:
    """Give a forked child a fresh interpreter's dispositions for the signals the
    runner ignores (SIGINT raises KeyboardInterrupt, SIGTERM kills, ...), whatever
    the host inherited: a host started with SIGINT ignored (a background job) must
    not pass that on to candidates. Ignored signals would also survive exec().

    Through ``_signal``, the C module under ``signal``: the same calls without the
    enum conversions, whose first use in a fresh fork copies ~20 pages of the
    runner's memory (about 0.1 ms of each evaluation)."""
    for sig in saved:
        try:
            _signal.signal(sig, _PYTHON_DISPOSITIONS.get(sig, _signal.SIG_DFL))
        except (OSError, ValueError, RuntimeError):
            continue


def set_limit(which: int, soft: int, hard: int) -> None:
    """Lower a limit; never ask for more than the current hard limit allows."""
    _cur_soft, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(which, (min(soft, hard), hard))


def reroute_imports() -> list[int]:
    """Import through ``/proc/self/fd/N`` so dropping privileges keeps imports working.

    Called once by the root runner after its set-up imports (in each child it would
    copy-on-write every module it touches); returns the descriptors a child keeps.
    """
    mapping: dict[str, str] = {}
    for entry in sys.path:
        if entry and entry not in mapping and os.path.isdir(entry):
            fd = os.open(entry, os.O_PATH | os.O_DIRECTORY)
            mapping[entry] = f"/proc/self/fd/{fd}"
    prefixes = sorted(mapping, key=len, reverse=True)

    def reroute(path: str) -> str:
        for prefix in prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return mapping[prefix] + path[len(prefix):]
        return path

    sys.path[:] = [reroute(p) for p in sys.path]
    for module in list(sys.modules.values()):
        package_path = getattr(module, "__path__", None)
        if isinstance(package_path, list):
            package_path[:] = [reroute(p) if isinstance(p, str) else p for p in package_path]
    sys.path_importer_cache.clear()
    return [int(route.rsplit("/", 1)[1]) for route in mapping.values()]


def close_fds_except(keep_fds: list[int]) -> None:
    """Close every descriptor from 3 up but ``keep_fds``."""
    low = 3
    for fd in sorted(keep_fds):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, 1 << 20)


def _confine(workdir: str, out_fd: int, keep_fds: list[int], limits: dict[str, Any],
             nproc: int | None, drop_to_nobody: bool) -> None:
    """Own process group, private fds, rlimits, no privileges: the cage, before any
    candidate code runs."""
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    close_fds_except(keep_fds)  # the runner's protocol pipes included
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir
    cpu = max(1, int(limits["cpu_s"]))
    set_limit(resource.RLIMIT_CORE, 0, 0)
    set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    set_limit(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20,
               int(limits["max_file_mb"]) << 20)
    if nproc is not None:  # else set by the candidate process (runner_candidate.py)
        set_limit(resource.RLIMIT_NPROC, nproc, nproc)
    if drop_to_nobody:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    else:
        drop_capabilities()
    # PR_SET_NO_NEW_PRIVS and line-buffered stdout/stderr come from the runner
    # (``prepare_children``), so that no child pays for them
    die_with_parent()  # after setuid, which clears it


die_with_parent = PreparedPrctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def prepare_children() -> bool:
    """Once, in the runner, what every forked child would otherwise do for itself:
    no privileges gained through execve() (inherited, and irreversible), and stdout
    and stderr line-buffered (the candidate's output reaches its file line by line,
    up to a crash). True when PR_SET_NO_NEW_PRIVS took."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)
    return prctl(PR_SET_NO_NEW_PRIVS, 1)


def _write_all(fd: int, data: bytes) -> None:
    if os.getpid() != _owner_pid:
        return  # a fork of the candidate unwound into our code: only the child reports
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass  # the runner stopped reading: it has already decided


def send_error(fd: int, kind: str, message: str) -> None:
    _write_all(fd, b"E" + json.dumps({"error": kind, "message": message}).encode())


def _load_candidate(module_name: str, compiled: Any, code: str, path: str) -> Any:
    """Import the candidate as ``module_name`` from ``path``, executing the code object
    compiled from the string we already hold (the file need not be reachable).

    The module gets what ``importlib.util.module_from_spec`` would give it (a spec
    with a location, a source loader, ``__file__``), built directly: the importlib
    helpers' first use in a fresh fork copies ~60 pages of the runner's memory
    (0.2-0.3 ms of each evaluation)."""
    loader = SourceFileLoader(module_name, path)
    spec = ModuleSpec(module_name, loader, origin=path)
    spec.has_location = True
    module = types.ModuleType(module_name)
    module.__spec__, module.__loader__, module.__file__ = spec, loader, path
    module.__package__, module.__cached__ = "", None
    linecache.cache[path] = (len(code), None, code.splitlines(True), path)
    sys.modules[module_name] = module
    exec(compiled, module.__dict__)
    return module


def limit_memory(memory_mb: int) -> None:
    """RLIMIT_AS to ``memory_mb``, keeping 1 MiB of address space (untouched, so free
    to map) that ``release_memory`` hands back to report a MemoryError."""
    global _reserve
    _reserve = mmap.mmap(-1, 1 << 20)
    set_limit(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20)


def release_memory() -> None:
    global _reserve
    if _reserve is not None:
        _reserve.close()
        _reserve = None


def failure(exc: BaseException, stage: str) -> tuple[str, str]:
    """Map an exception escaping the candidate to (error kind, message)."""
    if isinstance(exc, MemoryError):
        return "memory", f"MemoryError while {stage} (the memory limit was reached)"
    if isinstance(exc, SystemExit):
        return "crash", (f"the program exited early (sys.exit({exc.code!r})) while {stage},"
                         " before the harness returned a result")
    if isinstance(exc, UnsendableValue):
        return "invalid_output", describe(exc)
    return "crash", describe(exc)


def import_candidate(module_name: str, code: str, workdir: str) -> Any:
    """Compile and import the candidate: its module, or (error kind, message)."""
    path = os.path.join(workdir, f"{module_name}.py")
    try:
        compiled = compile(code, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
        release_memory()
        return "syntax", f"{type(exc).__name__}: {exc}"[:1000]
    except MemoryError:
        release_memory()
        return "memory", "MemoryError while compiling the candidate"
    try:
        return _load_candidate(module_name, compiled, code, path)
    except BaseException as exc:
        release_memory()
        print_traceback(exc)
        return failure(exc, "importing the candidate")


def harness_failed(result_fd: int, exc: BaseException) -> None:
    """Report an exception that escaped ``harness.run``."""
    release_memory()
    print_traceback(exc)
    send_error(result_fd, *failure(exc, "running the harness"))


def send_result(result_fd: int, result: Any) -> None:
    """Send the harness's return value to the runner as JSON (untrusted: the host
    decodes and scores it)."""
    try:
        payload = json.dumps(result, allow_nan=True).encode("ascii")
    except MemoryError:
        release_memory()
        send_error(result_fd, "memory", "MemoryError while encoding the output as JSON")
        return
    except BaseException as exc:
        release_memory()
        send_error(result_fd, "invalid_output",
                   f"output is not JSON-serialisable: {describe(exc)}")
        return
    release_memory()
    _write_all(result_fd, b"R" + payload)


def evaluate(job: dict[str, Any], result_fd: int, limits: dict[str, Any],
             signals: dict[int, Any]) -> None:
    """``candidate_process: false``: import the candidate into this process, next
    to the harness, and hand the module to ``harness.run`` (fast, but the candidate
    can then reach the harness, its instances and its result)."""
    limit_memory(int(limits["memory_mb"]))
    module = import_candidate(job["module_name"], job["code"], job["workdir"])
    if isinstance(module, tuple):
        send_error(result_fd, *module)
        return
    try:
        result = job["harness"].run(module, job["instances"])
    except BaseException as exc:
        harness_failed(result_fd, exc)
        return
    send_result(result_fd, result)


def run_child(*, body: Callable[..., None], job: dict[str, Any], out_fd: int, result_fd: int,
              keep_fds: list[int], limits: dict[str, Any], nproc: int | None,
              drop_to_nobody: bool,
              signals: dict[int, Any], restore: bool) -> None:
    """Body of the forked child; never returns (every path ends in ``os._exit``).

    Confines itself, then runs ``body(job, result_fd, limits, signals)``: ``evaluate``
    here, or ``runner_candidate.evaluate`` with the candidate in a process of its own.
    ``keep_fds`` are the descriptors it keeps besides ``result_fd``; ``restore``
    gives this process the runner's old signal dispositions (when the candidate runs
    in it). ``nproc`` is the RLIMIT_NPROC to set: the tasks the sandbox uid already
    runs (the kernel counts them all) plus the processes the evaluation may start;
    ``signals`` the dispositions the runner had before it ignored every signal.
    """
    global _owner_pid
    _owner_pid = os.getpid()
    status = 1
    try:
        try:
            if restore:
                restore_signals(signals)  # the candidate gets Python's usual signals
            _confine(job["workdir"], out_fd, [result_fd, *keep_fds], limits, nproc,
                     drop_to_nobody)
        except BaseException as exc:
            send_error(result_fd, "sandbox", f"could not confine the candidate: {describe(exc)}")
            return
        body(job, result_fd, limits, signals)
        for stream in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        status = 0
    finally:
        _EXIT(status)
