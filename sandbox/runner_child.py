"""Inside the process sandbox: the forked child that runs one candidate, and the
few Linux calls (prctl, unshare, capset) that the resident runner and its child need.

``runner.py`` loads this file by path: it runs under ``python -I``, so its own
folder is not on ``sys.path``, and neither module may import the engine (the
same runner also serves inside sandbox images that lack it). Stdlib only.

Why the child is built this way:

* it drops to ``nobody`` when the runner is root, so that RLIMIT_NPROC applies
  and host files readable only by root (``/etc/shadow``, ``/root``) stay closed;
* the interpreter may live where ``nobody`` cannot walk (pyenv under ``/root``),
  so before dropping it opens every ``sys.path`` folder as an ``O_PATH`` descriptor
  and imports through ``/proc/self/fd/N`` from then on: later imports (the standard
  library, ``numpy.random``) keep working while nothing else under ``/root`` opens;
* every path out ends in ``os._exit``, so the child never runs the runner's loop.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import linecache
import os
import resource
import signal
import sys
import traceback
from typing import Any

NOBODY = 65534  # uid and gid the candidate runs as when the runner is root

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_EXIT = os._exit  # held here so a candidate that replaces os._exit cannot keep us alive


def prctl(option: int, arg: int = 0) -> bool:
    """Call prctl(2); True when it succeeded."""
    zero = ctypes.c_ulong(0)
    return _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero) == 0


def unshare(flags: int) -> bool:
    """Call unshare(2); True when it succeeded."""
    return _libc.unshare(ctypes.c_int(flags)) == 0


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty every capability set: inside our own user namespace the runner holds
    all of them, and the candidate must hold none."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _libc.capset(ctypes.byref(header), data)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def count_tasks(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is ``uid``."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return total


def _set_limit(which: int, soft: int, hard: int) -> None:
    """Lower a limit; never ask for more than the current hard limit allows."""
    _cur_soft, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(which, (min(soft, hard), hard))


def _reroute_imports() -> None:
    """Import through ``/proc/self/fd/N`` so dropping privileges keeps imports working."""
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


def _confine(workdir: str, out_fd: int, result_fd: int, limits: dict[str, Any],
             drop_to_nobody: bool) -> None:
    """Own process group, private fds, rlimits, no privileges: the cage, before any
    candidate code runs."""
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    # Close everything else, the runner's protocol pipes included.
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 20)
    uid = NOBODY if drop_to_nobody else os.getuid()
    nproc = count_tasks(uid) + int(limits["max_processes"])
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir
    if drop_to_nobody:
        _reroute_imports()
    cpu = max(1, int(limits["cpu_s"]))
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
    _set_limit(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20,
               int(limits["max_file_mb"]) << 20)
    _set_limit(resource.RLIMIT_NPROC, nproc, nproc)
    if drop_to_nobody:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    else:
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass


def _describe(exc: BaseException) -> str:
    """``ExcType: message (at file:line in function)``: one line for the prompt."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a candidate's exception whose __str__ raises
        text = type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text[:1000]


def _print_traceback(exc: BaseException) -> None:
    try:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.__stderr__)
        sys.__stderr__.flush()
    except Exception:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass  # the runner stopped reading: it has already decided


def _send_error(fd: int, kind: str, message: str) -> None:
    _write_all(fd, b"E" + json.dumps({"error": kind, "message": message}).encode())


def _load_candidate(module_name: str, compiled: Any, code: str, path: str) -> Any:
    """Import the candidate as ``module_name`` from ``path``, executing the code object
    compiled from the string we already hold (the file need not be reachable)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    linecache.cache[path] = (len(code), None, code.splitlines(True), path)
    sys.modules[module_name] = module
    exec(compiled, module.__dict__)
    return module


def _failure(exc: BaseException, stage: str) -> tuple[str, str]:
    """Map an exception escaping the candidate to (error kind, message)."""
    if isinstance(exc, MemoryError):
        return "memory", f"MemoryError while {stage} (the memory limit was reached)"
    if isinstance(exc, SystemExit):
        return "crash", (f"the program exited early (sys.exit({exc.code!r})) while {stage},"
                         " before the harness returned a result")
    return "crash", _describe(exc)


def _evaluate(harness: Any, instances: list, module_name: str, code: str, workdir: str,
              result_fd: int, memory_mb: int) -> None:
    reserve: bytearray | None = bytearray(1 << 20)  # freed to report a MemoryError
    _set_limit(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20)
    path = os.path.join(workdir, f"{module_name}.py")
    try:
        compiled = compile(code, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
        reserve = None
        _send_error(result_fd, "syntax", _describe(exc))
        return
    except MemoryError:
        reserve = None
        _send_error(result_fd, "memory", "MemoryError while compiling the candidate")
        return
    try:
        module = _load_candidate(module_name, compiled, code, path)
    except BaseException as exc:
        reserve = None
        _print_traceback(exc)
        _send_error(result_fd, *_failure(exc, "importing the candidate"))
        return
    try:
        result = harness.run(module, instances)
    except BaseException as exc:
        reserve = None
        _print_traceback(exc)
        _send_error(result_fd, *_failure(exc, "running the harness"))
        return
    try:
        payload = json.dumps(result, allow_nan=True).encode("ascii")
    except MemoryError:
        reserve = None
        _send_error(result_fd, "memory", "MemoryError while encoding the output as JSON")
        return
    except BaseException as exc:
        reserve = None
        _send_error(result_fd, "invalid_output", f"output is not JSON-serialisable: {_describe(exc)}")
        return
    del reserve
    _write_all(result_fd, b"R" + payload)


def run_child(*, harness: Any, instances: list, module_name: str, code: str, workdir: str,
              out_fd: int, result_fd: int, limits: dict[str, Any], drop_to_nobody: bool) -> None:
    """Body of the forked child; never returns (every path ends in ``os._exit``)."""
    status = 1
    try:
        try:
            _confine(workdir, out_fd, result_fd, limits, drop_to_nobody)
        except BaseException as exc:
            _send_error(result_fd, "sandbox", f"could not confine the candidate: {_describe(exc)}")
            return
        _evaluate(harness, instances, module_name, code, workdir, result_fd,
                  int(limits["memory_mb"]))
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        status = 0
    finally:
        _EXIT(status)
