"""The end of each evaluation in the process sandbox: the watch over its child (result
pipe, deadline, output cap), the sweep that leaves no process of it behind, the wipe
that leaves no file, and the task count RLIMIT_NPROC starts from.

Used by ``runner.py`` (same folder; stdlib only, no engine imports, since the same
files serve inside sandbox images).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import time
from typing import Any, NamedTuple


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


def watch(pid: int, read_fd: int, limits: dict[str, Any], start: float) -> dict[str, Any]:
    """Read the child's result until it exits, the deadline passes or the output
    outgrows ``max_output_bytes``; kill its group in the last two cases."""
    deadline = start + float(limits["timeout_s"])
    cap = int(limits["max_output_bytes"]) + 1  # + the one-byte tag
    data = bytearray()
    os.set_blocking(read_fd, False)
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pidfd = None
    outcome: dict[str, Any] = {"timed_out": False, "overflow": False}
    waited = None
    try:
        while waited is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome["timed_out"] = True
                break
            wait_s = remaining if pidfd is not None else min(remaining, 0.02)
            for fd, _event in poller.poll(math.ceil(wait_s * 1000)):
                if fd == read_fd and not _drain(read_fd, data, cap):
                    poller.unregister(read_fd)
            if len(data) > cap:
                outcome["overflow"] = True
                break
            waited = _try_wait(pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if waited is None:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # in case it never reached its own group
        waited = os.wait4(pid, 0)
    else:
        _drain(read_fd, data, cap)
        outcome["overflow"] = len(data) > cap
    outcome.update(wall_s=time.monotonic() - start, status=waited[1],
                   cpu_s=waited[2].ru_utime + waited[2].ru_stime, data=bytes(data[:cap]))
    return outcome


def _drain(fd: int, data: bytearray, cap: int) -> bool:
    """Read what is there (up to just past ``cap``); False at end of file."""
    while len(data) <= cap:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        data += chunk
    return True


def _try_wait(pid: int) -> tuple | None:
    result = os.wait4(pid, os.WNOHANG)
    return None if result[0] == 0 else result


class ProcessRow(NamedTuple):
    ppid: int
    state: str  # the state letter of /proc/PID/stat: R, S, Z, ...
    cmdline: bytes  # NUL-separated; empty unless asked for


def process_table(with_cmdline: bool = False) -> dict[int, ProcessRow]:
    """pid -> ProcessRow for every process in /proc (no /proc/*/children needed; those
    that vanish meanwhile are left out). The tests read it too (tests/proc_table.py)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            row = process_row(int(name), with_cmdline)
            if row is not None:
                table[int(name)] = row
    return table


def process_row(pid: int, with_cmdline: bool = False) -> ProcessRow | None:
    """``pid``'s ProcessRow from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        cmdline = b""
        if with_cmdline:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        return ProcessRow(int(fields[1]), fields[0].decode(), cmdline)
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> dict[int, int]:
    """Live (non-zombie) descendants of ``root``: pid -> ppid."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row.ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            if pid not in found:
                stack.append(pid)
                if table[pid].state != "Z":
                    found[pid] = table[pid].ppid
    return found


def _kill_exact(pid: int, expected_parents: set[int]) -> None:
    """SIGKILL ``pid`` unless it was reused by a process outside the tree."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        row = process_row(pid)
        if row is not None and row.ppid in expected_parents:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _reap() -> bool:
    """Reap exited children; True while some child is still alive."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def sweep(timeout_s: float = 5.0) -> bool:
    """Kill every descendant of this runner; True once none is left.

    The runner is a child subreaper, so a daemon that called setsid() or forked
    twice is still our descendant and dies here, after every evaluation. For the
    same reason no child means no descendant at all: the common case scans nothing.
    """
    me = os.getpid()
    deadline = time.monotonic() + timeout_s
    while _reap():
        if time.monotonic() > deadline:
            return False
        live = descendants(me)
        tree = set(live) | {me}
        for pid in live:
            _kill_exact(pid, tree)
        time.sleep(0.002)
    return True


def wipe(root: str, mode: int) -> bool:
    """Delete everything under ``root`` (left as it is, with ``mode`` restored);
    True once it is empty. A candidate that runs as our uid may have written, or
    chmod-ed shut, anything in there; the next evaluation must see none of it."""
    with contextlib.suppress(OSError):  # not on a root we do not own (Docker's /work),
        os.chmod(root, mode)  # which the candidate cannot chmod either
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
        return not os.listdir(root)
    except Exception:  # noqa: BLE001 - a tree too deep to walk: replace this runner
        return False


def remove_tree(path: str) -> None:
    """Delete a work dir even when the candidate chmod-ed parts of it shut."""
    try:
        os.chmod(path, 0o700)
        for current, dirs, _files in os.walk(path):
            for name in dirs:
                full = os.path.join(current, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
