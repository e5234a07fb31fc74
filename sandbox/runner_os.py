"""The Linux calls of the process sandbox: namespaces, prctl, capabilities, task
counts, and the sweep that leaves no process of an evaluation behind.

Used by ``runner.py`` and ``runner_child.py`` (same folder; stdlib only, no
engine imports, since the same files serve inside sandbox images). ctypes reaches
what the ``os`` module lacks: prctl(2), unshare(2), capset(2).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import time

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


def isolate_network() -> bool:
    """Enter a fresh network namespace (only a loopback that is down); True on success.

    Root needs only CLONE_NEWNET. Anyone else needs a user namespace too, mapping
    just their own uid and gid, so files and RLIMIT_NPROC still count as theirs.
    """
    if os.geteuid() == 0:
        return unshare(CLONE_NEWNET)
    uid, gid = os.getuid(), os.getgid()
    if not unshare(CLONE_NEWUSER | CLONE_NEWNET):
        return False
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        pass  # unmapped ids read as 65534 inside, but the network is still cut
    return True


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every process (no /proc/*/children needed)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            table[int(name)] = (int(fields[1]), fields[0].decode())
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(root: int) -> dict[int, int]:
    """Live (non-zombie) descendants of ``root``: pid -> ppid."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            if pid not in found:
                stack.append(pid)
                if table[pid][1] != "Z":
                    found[pid] = table[pid][0]
    return found


def _kill_exact(pid: int, expected_parents: set[int]) -> None:
    """SIGKILL ``pid`` unless it was reused by a process outside the tree."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rpartition(b")")[2].split()[1])
        if ppid in expected_parents:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
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
