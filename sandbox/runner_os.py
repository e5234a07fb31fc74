"""The Linux calls that set up the process sandbox's cage: namespaces, mounts, prctl,
capabilities. What ends an evaluation (the watch over its child, the sweep, the wipe)
is in ``runner_reap.py``.

Used by ``runner.py`` and ``runner_child.py`` (same folder; stdlib only, no
engine imports, since the same files serve inside sandbox images). ctypes reaches
what the ``os`` module lacks: prctl(2), unshare(2), mount(2), capset(2).
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import os
import sys

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


def fork_lean() -> int:
    """fork(2) without CPython's after-fork bookkeeping, where it has nothing to do.

    ``os.fork()`` runs the interpreter's at-fork hooks in the child (``threading``'s
    thread table, ``random``'s reseed, ``logging``'s locks, ...): Python code whose
    first run in a fresh fork copies ~200 pages of the parent's memory, about 0.5 ms
    of every evaluation. In a process with one Python thread that is not importing
    (the runner between evaluations) there is nothing for them to fix: no other
    thread's state to drop, no lock another thread could hold, the same thread on
    both sides. So the runner calls libc's fork() directly (holding the GIL, as
    ``os.fork`` does) when it has no other Python thread, and ``os.fork`` otherwise.
    The one hook with an effect the candidate could see, ``random``'s reseed, is
    the runner's to do: ``reseed_random`` after each child (``Runner.evaluate``).
    """
    if _thread._count():  # threads started by Python, the main one not counted
        return os.fork()
    pid = _libc_fork()
    if pid < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return pid


_libc_fork = ctypes.PyDLL(None, use_errno=True).fork  # PyDLL: the GIL stays held
_libc_fork.restype = ctypes.c_int
_libc_fork.argtypes = []


def reseed_random() -> None:
    """What ``random``'s at-fork hook would do in the next child (see ``fork_lean``):
    give it a fresh state. Done in the runner between two children, when the pages
    written are the runner's alone again, so that nobody copies them."""
    module = sys.modules.get("random")
    if module is not None:
        module.seed()


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
