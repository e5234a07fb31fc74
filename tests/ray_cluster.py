"""A real Ray cluster on 127.0.0.1 for the Ray tests and ``benchmarks/ray_scaling.py``:
a head and worker nodes, each a ``ray start`` with a temp dir of its own, and a way to
lose a node as when its machine goes away (SIGKILL to its whole process tree).

Test support, not part of the package: a user's cluster is started by ``ray start`` and
stopped by ``ray stop``. The benchmark imports it with the checkout on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.proc_table import process_table

RAY = str(Path(sys.executable).with_name("ray"))


def kill_processes_of(temp_dir: Path) -> int:
    """SIGKILL every process of the Ray node that lives in ``temp_dir`` (its command
    line names the folder) and all their descendants: the node is lost, as when its
    machine goes away. Returns how many were killed."""
    table = process_table(with_cmdline=True)
    needle = str(temp_dir).encode()
    victims = {pid for pid, row in table.items() if needle in row.cmdline and pid != os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, row in table.items():
            if row.ppid in victims and pid not in victims:
                victims.add(pid)
                grew = True
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(victims)


class LocalRayCluster:
    """A head node and worker nodes on loopback, each a ``ray start`` of its own that
    declares ``cpus`` CPUs."""

    def __init__(self, cpus: int = 1) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.cpus = cpus
        self.temp_dirs: list[Path] = []

    def _start(self, *args: str) -> Path:
        temp_dir = Path(tempfile.mkdtemp(prefix="evo-ray-", dir="/tmp"))  # short: sockets
        self.temp_dirs.append(temp_dir)
        subprocess.run([RAY, "start", *args, "--node-ip-address", "127.0.0.1",
                        "--num-cpus", str(self.cpus), "--temp-dir", str(temp_dir),
                        "--disable-usage-stats"], check=True, capture_output=True,
                       timeout=180)
        return temp_dir

    def start_head(self) -> None:
        self._start("--head", "--port", str(self.port), "--include-dashboard", "false")

    def add_worker(self) -> Path:
        return self._start("--address", self.address)

    def stop(self) -> None:
        """Kill every node's processes and remove their temp dirs."""
        for temp_dir in self.temp_dirs:
            kill_processes_of(temp_dir)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
