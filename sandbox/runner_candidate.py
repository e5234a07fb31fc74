"""The candidate in a process of its own (``candidate_process: true``, the default).

Why: a candidate imported next to the harness can replace ``harness.run``, walk the
stack to the instances, or patch numpy, and return a feasible output that its
evolved function never produced (an offline packing for an online problem);
``score.py`` cannot tell. So the evaluation child (``runner_child.run_child``),
already confined, forks once more:

* the candidate process (the grandchild) dies with its parent, closes every
  descriptor but its stdio, its end of the pipe pair and the import routes, gets
  Python's usual signals back, takes the RLIMIT_NPROC, forgets the harness (its
  module, and modules from its folder, leave ``sys.modules`` and are emptied),
  imports the candidate and answers calls (``serve``). The instances were never in
  any memory it was copied from: the runner keeps them unparsed in a memfd that
  this process does not keep;
* the harness process (the child) marks itself non-dumpable, so that a candidate
  of the same uid can neither ptrace it nor read or write its ``/proc/<pid>/mem``
  or descriptors, keeps ignoring the signals the runner ignores, reads the instances
  only now, and hands ``harness.run`` a module whose functions forward each call
  over the pipe (``runner_channel.CandidateCaller``), one write and one read per call.

The two share one CPU (``_share_one_cpu``): on bin_packing a call then costs about
27 us more than in one process, 10,000 calls 0.27 s on top of 0.1 s.

How the candidate process ends becomes how the evaluation ends: when its end of the
channel closes, the harness process reaps it and ends the same way, by the same
signal or with the same exit status, so the runner classifies it as it always did
(SIGXCPU is a timeout, an early exit a crash, ...). Both processes share the
evaluation's process group, so a timeout kills both.

Stdlib only, no engine imports (the same files serve inside sandbox images).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from runner_channel import (
    CALL,
    CALL_KW,
    ERROR,
    INDEX,
    MAX_NAME_CHARS,
    MAX_NAMES,
    RESULT,
    TRACEBACK_CHARS,
    CandidateCaller,
    Channel,
    ChannelBroken,
    ChannelClosed,
    UnsendableValue,
    describe,
    failed_message,
    format_traceback,
    load_stored,
    new_message,
    read_ready,
    ready_message,
)
from runner_child import (
    close_fds_except,
    die_with_parent,
    harness_failed,
    import_candidate,
    limit_memory,
    release_memory,
    restore_signals,
    send_error,
    send_result,
    set_limit,
)
from runner_codec import CodecError, decode, decode_pair, encode, encode_into
from runner_os import PR_SET_DUMPABLE, PreparedPrctl, current_cpu

LINGER_S = 1.0  # how long a candidate process may take to exit once its channel closed
_UNDUMPABLE = PreparedPrctl(PR_SET_DUMPABLE, 0)
_EXIT = os._exit  # held here so a candidate that replaces os._exit cannot keep us alive
_HERE = os.path.dirname(os.path.abspath(__file__))
_OUT_OF_MEMORY = bytes(new_message(ERROR) + encode(
    ("error", "MemoryError", (), "MemoryError in the candidate (the memory limit was reached)",
     "MemoryError\n")))


def evaluate(job: dict[str, Any], result_fd: int, limits: dict[str, Any],
             signals: dict[int, Any]) -> None:
    """The harness process: start the candidate process, then run the harness on a
    module that forwards to it (see the module docstring)."""
    _UNDUMPABLE()
    _share_one_cpu()
    try:
        candidate = CandidateProcess(job, limits, signals)
    except OSError as exc:
        send_error(result_fd, "sandbox", f"cannot start the candidate process: {exc}")
        return
    try:
        instances = load_stored(job["instances_fd"], job["instances_size"])
    except Exception as exc:  # noqa: BLE001 - reported, and this runner replaced
        candidate.finish()
        send_error(result_fd, "sandbox", f"cannot read the instances: {type(exc).__name__}: "
                                         f"{exc}"[:1000])
        return
    finally:
        os.close(job["instances_fd"])
    limit_memory(int(limits["memory_mb"]))
    names = candidate.ready()
    if isinstance(names, tuple):  # the import failed: (error kind, message)
        candidate.finish()
        send_error(result_fd, *names)
        return
    module = candidate.caller.module(
        job["module_name"], names, os.path.join(job["workdir"], f"{job['module_name']}.py"))
    sys.modules[job["module_name"]] = module
    try:
        result = job["harness"].run(module, instances)
    except BaseException as exc:
        candidate.finish()
        harness_failed(result_fd, exc)
        return
    candidate.finish()
    send_result(result_fd, result)


def _share_one_cpu() -> None:
    """Keep this process, and so the candidate process it forks, on the CPU the kernel
    gave it. The two never run at once (each call waits for its answer), and waking
    a process that sleeps on another CPU costs about 40 us per call in a virtual
    machine against 7 us on the same one. The candidate may widen its own affinity."""
    cpu = current_cpu()
    if cpu >= 0:
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, {cpu})


class CandidateProcess:
    """The harness process's handle on the candidate process it forked."""

    def __init__(self, job: dict[str, Any], limits: dict[str, Any],
                 signals: dict[int, Any]) -> None:
        to_candidate, requests = os.pipe()
        replies, to_harness = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _candidate_main(parent, to_candidate, to_harness, job, limits, signals)
            finally:
                _EXIT(status)
        os.close(to_candidate)
        os.close(to_harness)
        self.pid: int | None = pid
        self.status = 0
        self.channel = Channel(replies, requests)
        self.caller = CandidateCaller(self.channel, self._ended)

    def ready(self) -> list[str] | tuple[str, str]:
        """The candidate's callable names once it is imported, or (error kind, message)."""
        try:
            return read_ready(self.channel.recv())
        except ChannelClosed:
            try:
                self._ended()
            except ChannelBroken as exc:
                return "crash", str(exc)
        except ChannelBroken as exc:
            return "crash", str(exc)
        raise AssertionError("unreachable")

    def finish(self) -> None:
        """Close the channel (the candidate process then exits on its own) and reap it,
        so that its CPU time counts in ours."""
        self.channel.close()
        if self.pid is not None:
            self._reap()

    def _ended(self) -> None:
        """The candidate's end of the channel closed: end this process the way the
        candidate process ended. If it lingers instead, kill it and raise ChannelBroken."""
        status = self._wait(LINGER_S)
        if status is None:
            self._reap()
            raise ChannelBroken("the candidate process closed its end of the channel")
        for stream in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(sig, signal.SIG_DFL)  # this process ignores it, as the runner
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)
            _EXIT(128 + sig)
        _EXIT(os.waitstatus_to_exitcode(status))

    def _reap(self) -> int:
        status = self._wait(LINGER_S)
        if status is None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)  # our unreaped child: its pid is still its
            status = os.waitpid(self.pid, 0)[1]
            self.pid, self.status = None, status
        return status

    def _wait(self, timeout_s: float) -> int | None:
        """The wait status once the candidate process has exited (reaped), or None
        if it still runs after ``timeout_s``."""
        if self.pid is None:
            return self.status
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.pid, self.status = None, status
                    return status
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if pidfd is not None:
                    select.select([pidfd], [], [], left)
                else:
                    time.sleep(min(left, 0.005))
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _candidate_main(parent: int, read_fd: int, write_fd: int, job: dict[str, Any],
                    limits: dict[str, Any], signals: dict[int, Any]) -> int:
    """The candidate process: import the candidate, answer calls; the exit status."""
    die_with_parent()  # not inherited through fork
    if os.getppid() != parent:
        return 1
    close_fds_except([read_fd, write_fd, *job["import_fds"]])
    set_limit(resource.RLIMIT_NPROC, job["nproc"], job["nproc"])
    restore_signals(signals)  # the candidate gets Python's usual signals
    _forget_harness(job)
    channel = Channel(read_fd, write_fd)
    limit_memory(int(limits["memory_mb"]))
    module = import_candidate(job["module_name"], job["code"], job["workdir"])
    if isinstance(module, tuple):
        channel.send(failed_message(*module))
    else:
        names = callable_names(module)
        channel.send(ready_message(names))
        serve(module, names, channel, os.getpid(), _EXIT)
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    return 0


def error_message(exc: BaseException, kind: str = "error", skip: int = 1) -> bytearray:
    """The ``E`` reply for ``exc`` (``skip`` frames of ours at the top of its traceback)."""
    cls = type(exc)
    builtin = cls.__name__ if getattr(builtins, cls.__name__, None) is cls else None
    if isinstance(exc, SystemExit) and not isinstance(exc.code, int | str | type(None)):
        args: tuple = (repr(exc.code),)
    else:
        args = exc.args
    out = new_message(ERROR)
    fields = (kind, builtin, args, describe(exc), format_traceback(exc, skip)[-TRACEBACK_CHARS:])
    try:
        encode_into(out, fields)
    except Exception:
        out = new_message(ERROR)
        encode_into(out, (kind, builtin, (_text(exc),), fields[3], fields[4]))
    return out


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def serve(module: Any, names: list[str], channel: Channel, owner: int,
          exit_now: Callable[[int], NoReturn]) -> None:
    """Answer the harness's calls until it closes the channel. ``names`` are those
    ``ready_message`` sent; ``owner`` is the candidate process's pid: a fork of it
    that returns into this loop leaves at once through ``exit_now``, so only the
    owner ever answers."""
    while True:
        try:
            request = channel.recv()
        except ChannelClosed:
            return
        name = "?"
        try:
            name = names[INDEX.unpack_from(request, 5)[0]]
            if request[4] == CALL:
                result = getattr(module, name)(*decode(request, 7))
            elif request[4] == CALL_KW:
                args, kwargs = decode_pair(request, 7)
                result = getattr(module, name)(*args, **kwargs)
            else:
                raise ChannelBroken(f"a message of kind {request[4]} for a call")
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the harness
            if os.getpid() != owner:
                exit_now(0)
            out = _error_reply(exc)
        else:
            if os.getpid() != owner:
                exit_now(0)
            out = new_message(RESULT)
            try:
                encode_into(out, result)
            except MemoryError as exc:
                out = _error_reply(exc)
            except Exception as exc:  # noqa: BLE001 - CodecError, or a subclass's __int__
                out = _error_reply(UnsendableValue(
                    f"{name}() returned a value that cannot leave the candidate process: "
                    f"{describe(exc) if not isinstance(exc, CodecError) else exc}"),
                    kind="unsendable")
        channel.send(out)


def _error_reply(exc: BaseException, kind: str = "error") -> bytearray:
    """``error_message``, even when memory has run out."""
    if isinstance(exc, MemoryError):
        release_memory()  # the reserve, for what follows
    try:
        return error_message(exc, kind)
    except MemoryError:
        return bytearray(_OUT_OF_MEMORY)


def callable_names(module: Any) -> list[str]:
    """The names of the module's callables (dunders left out), as ``serve`` takes them."""
    return [name for name, value in list(vars(module).items())
            if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS
            and not name.startswith("__") and callable(value)][:MAX_NAMES]


def _forget_harness(job: dict[str, Any]) -> None:
    """Drop and empty the harness module and any module from the harness's folder."""
    harness = job.pop("harness", None)
    filename = getattr(harness, "__file__", None)
    folder = os.path.dirname(os.path.abspath(filename)) if isinstance(filename, str) else None
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        beside = (folder is not None and folder != _HERE and isinstance(path, str)
                  and os.path.dirname(os.path.abspath(path)) == folder)
        if module is harness or name == "harness" or beside:
            sys.modules.pop(name, None)
            with contextlib.suppress(Exception):
                vars(module).clear()
    for key in ("instances", "instances_fd", "instances_size"):
        job.pop(key, None)
