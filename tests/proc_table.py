"""The process table read from /proc, for the tests and their support code
(``conftest.py``, ``ray_cluster.py``); stdlib only, so benchmarks may import it too."""

from __future__ import annotations

import os
from typing import NamedTuple


class ProcessRow(NamedTuple):
    ppid: int
    state: str  # the state letter of /proc/PID/stat: R, S, Z, ...
    cmdline: bytes  # NUL-separated; empty unless asked for


def process_table(with_cmdline: bool = False) -> dict[int, ProcessRow]:
    """pid -> ProcessRow for every process in /proc (those that vanish meanwhile are
    left out)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            cmdline = b""
            if with_cmdline:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read()
            table[int(name)] = ProcessRow(int(fields[1]), fields[0].decode(), cmdline)
        except (OSError, IndexError, ValueError):
            continue
    return table
