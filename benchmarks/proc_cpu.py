"""CPU time of processes read from /proc, for the benchmarks (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [7]
    minflt, [8] cminflt, [11] utime, [12] stime, [13] cutime, [14] cstime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_cpu(pid: int) -> tuple[str, float]:
    """State and own user+system CPU seconds of ``pid`` (a zombie keeps them)."""
    fields = _stat_fields(pid)
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(roots: int | Iterable[int]) -> float:
    """User+system CPU seconds of ``roots`` and all their live descendants, with the
    CPU of the children they reaped."""
    return tree_usage(roots)[0]


def tree_usage(roots: int | Iterable[int]) -> tuple[float, int]:
    """(user+system CPU seconds, minor page faults) of ``roots`` and all their live
    descendants, with those of the children they reaped. Page faults are counted by
    the kernel, exactly: on a noisy machine they move only when the work does."""
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat_fields(entry)
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
            usage[int(entry)] = (sum(int(f) for f in fields[11:15]),  # u/s time, cu/cs time
                                 int(fields[7]) + int(fields[8]))  # minflt, cminflt
    ticks, faults, stack = 0, 0, [roots] if isinstance(roots, int) else list(roots)
    while stack:
        pid = stack.pop()
        pid_ticks, pid_faults = usage.get(pid, (0, 0))
        ticks, faults = ticks + pid_ticks, faults + pid_faults
        stack.extend(children.get(pid, []))
    return ticks / os.sysconf("SC_CLK_TCK"), faults
