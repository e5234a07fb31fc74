"""The Linux calls of the process sandbox: namespaces, mounts, prctl, capabilities,
task counts, the watch over one child, the sweep that leaves no process of an
evaluation behind and the wipe that leaves no file.

Used by ``runner.py`` and ``runner_child.py`` (same folder; stdlib only, no
engine imports, since the same files serve inside sandbox images). ctypes reaches
what the ``os`` module lacks: prctl(2), unshare(2), mount(2), capset(2).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MNT_DETACH = 2
# Host folders anyone may write to. In the runner's mount namespace each becomes
# read-only: an empty tmpfs, or a read-only view where the runner needs what is in it.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int = 0) -> bool:
    """Call prctl(2); True when it succeeded."""
    zero = ctypes.c_ulong(0)
    return _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero) == 0


class PreparedPrctl:
    """One prctl(2) call with its ctypes arguments built ahead, in the runner: a forked
    child that built them itself would first copy the dozens of pages of the runner's
    memory that ctypes touches doing so (~0.1 ms of every evaluation)."""

    def __init__(self, option: int, arg: int = 0) -> None:
        zero = ctypes.c_ulong(0)
        self._args = (ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero)
        self._call = _libc.prctl

    def __call__(self) -> bool:
        """Make the call; True when it succeeded."""
        return self._call(*self._args) == 0


def current_cpu() -> int:
    """The CPU this thread runs on (sched_getcpu(3)), or -1."""
    try:
        return int(_libc.sched_getcpu())
    except (AttributeError, OSError):
        return -1


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


def enter_namespaces(network: bool, files: bool) -> tuple[bool, bool]:
    """Enter a fresh network namespace (only a loopback that is down) and a private
    mount and IPC namespace; says which of the two worked.

    Root needs nothing more. Anyone else needs a user namespace first, mapping just
    their own uid and gid, so files and RLIMIT_NPROC still count as theirs.
    """
    if not (network or files):
        return False, False
    if os.geteuid() != 0:
        uid, gid = os.getuid(), os.getgid()
        if not unshare(CLONE_NEWUSER):
            return False, False
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError:
            pass  # unmapped ids read as 65534 inside; the namespaces still work
    cut = network and unshare(CLONE_NEWNET)
    private = files and (unshare(CLONE_NEWNS | CLONE_NEWIPC) or unshare(CLONE_NEWNS))
    return cut, private


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """Call mount(2); OSError when it fails."""
    def arg(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if _libc.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags),
                   arg(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _kept_flags(path: str) -> int:
    """The mount flags of ``path`` that a read-only remount must repeat (inside a user
    namespace, those of a mount inherited from the host are locked)."""
    have = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                   (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                   (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if have & st:
            flags |= ms
    if not have & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= MS_STRICTATIME
    return flags


def seal_shared_dirs(needed: list[str]) -> None:
    """Make every host folder in ``SHARED_DIRS`` read-only in our mount namespace, so
    nothing written in there can outlive an evaluation: an empty tmpfs over it, or,
    where a path in ``needed`` (our root, sys.path, the harness) lies inside, a
    read-only view of it. OSError when one of them cannot be sealed."""
    needed = [os.path.realpath(p) for p in needed if p and os.path.isabs(p)]
    for folder in dict.fromkeys(os.path.realpath(d) for d in SHARED_DIRS):
        if not os.path.isdir(folder):
            continue
        if any(_within(path, folder) for path in needed):
            mount(folder, folder, None, MS_BIND | MS_REC)
            mount(None, folder, None,
                  MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(folder))
        else:
            mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=64k,nr_inodes=16,mode=1777")


def isolate_files(root: str, work_mb: int, needed: list[str],
                  hide: list[str] | tuple[str, ...] = ()) -> bool:
    """In the private mount namespace ``enter_namespaces`` made: stop mounts from
    propagating to the host, seal the shared folders, cover each folder in ``hide``
    (a problem's hidden test data) with an empty read-only tmpfs, and put a tmpfs of
    ``work_mb`` MiB on ``root``, so every work dir lives in capped memory and
    vanishes with us. False (a warning on stderr) when any step failed."""
    mode = "0711" if os.geteuid() == 0 else "0700"
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        seal_shared_dirs([root, *needed])
        for folder in hide:
            if os.path.isdir(folder):
                mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,nr_inodes=16,mode=0555")
        mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={work_mb}m,nr_inodes={work_mb * 256},mode={mode}")
    except OSError as exc:
        print(f"runner: file isolation incomplete: {exc}", file=sys.stderr)
        return False
    return True


def umount(target: str) -> bool:
    """Detach the mount on ``target`` (ours); True when it went."""
    return _libc.umount2(os.fsencode(target), ctypes.c_int(MNT_DETACH)) == 0


def remove_at(parent_fd: int, name: str) -> None:
    """Delete ``name`` in the folder open as ``parent_fd``, with all it holds. The
    descriptor, opened before our mounts changed, still reaches the host's writable
    view of a folder that our namespace shows read-only."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=parent_fd)
        return
    try:
        for entry in os.scandir(fd):
            remove_at(fd, entry.name)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=parent_fd)


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
