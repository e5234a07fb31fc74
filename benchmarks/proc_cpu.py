"""CPU time of processes read from /proc, for the benchmarks (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def proc_cpu(pid: int) -> tuple[str, float]:
    """State and own user+system CPU seconds of ``pid`` (a zombie keeps them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(roots: int | Iterable[int]) -> float:
    """User+system CPU seconds of ``roots`` and all their live descendants, with the
    CPU of the children they reaped."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
            cpu[int(entry)] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    total, stack = 0, [roots] if isinstance(roots, int) else list(roots)
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")
