"""One resident runner process (``sandbox/runner.py``) seen from the host.

It moves length-prefixed JSON frames over the runner's pipes and can stop it hard,
together with everything it started. ``process.ProcessSandbox`` pools these.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evoengine.evaluation.result import ErrorKind

GRACE_S = 5.0  # the runner enforces timeout_s itself; past timeout_s + this, it is stuck
_HEADER = struct.Struct(">I")
CONTROL_FRAME_MAX = 1 << 20  # hello and ready frames
ENVELOPE_BYTES = 1 << 20  # what a result frame may add around the output
ESCAPING_FACTOR = 6  # the output travels as a JSON string: a control byte grows to \u00XX
ERROR_KINDS = {kind.value for kind in ErrorKind}


def clean_environment(home: str) -> dict[str, str]:
    """The whole environment a runner (and so every candidate) gets: no host
    variables, no API keys; one BLAS thread, since rlimits and pools count processes."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class RunnerGone(Exception):
    """The runner died, closed its pipes or broke the protocol."""


def encode_frame(message: Any) -> bytes:
    """One frame of the runner protocol: a 4-byte big-endian length, then JSON."""
    body = json.dumps(message).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def take_frame(buffer: bytearray, max_bytes: int) -> dict[str, Any] | None:
    """Cut the next whole frame off ``buffer``; None if it is not all there yet.
    RunnerGone for an oversized frame or one that is not a JSON object."""
    if len(buffer) < _HEADER.size:
        return None
    size = _HEADER.unpack_from(buffer)[0]
    if size > max_bytes:
        raise RunnerGone(f"the runner sent a {size}-byte frame (limit {max_bytes})")
    end = _HEADER.size + size
    if len(buffer) < end:
        return None
    body = bytes(buffer[_HEADER.size:end])
    del buffer[:end]
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RunnerGone("the runner sent a frame that is not JSON") from exc
    if not isinstance(message, dict):
        raise RunnerGone("the runner sent a frame that is not an object")
    return message


def kill_descendants(root: int, timeout_s: float = 3.0) -> None:
    """SIGKILL every live descendant of ``root`` (a stopped runner), scanning /proc
    again until none is left, since candidates may fork while we look."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        table: dict[int, tuple[int, bytes]] = {}
        for name in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError, IndexError, ValueError), \
                    open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
                table[int(name)] = (int(fields[1]), fields[0])
        live, stack = [], [root]
        while stack:
            parent = stack.pop()
            children = [pid for pid, (ppid, _state) in table.items() if ppid == parent]
            stack += children
            live += [pid for pid in children if table[pid][1] != b"Z"]
        if not live:
            return
        for pid in live:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


def resolve_waiter(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def _ready(fd: int, writer: bool, deadline: float) -> None:
    """Wait until ``fd`` is readable (or writable) in the running loop."""
    loop = asyncio.get_running_loop()
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise asyncio.TimeoutError
    future = loop.create_future()
    add, remove = ((loop.add_writer, loop.remove_writer) if writer
                   else (loop.add_reader, loop.remove_reader))
    add(fd, resolve_waiter, future)
    try:
        await asyncio.wait_for(future, remaining)
    finally:
        remove(fd)


class RunnerProcess:
    """One resident runner process, its private folder and its framed pipes.

    The folder holds the runner's log and ``work``, the runner's ``--root``: in the
    runner's own mount namespace a tmpfs of ``work_mb`` MiB, so from here it stays
    empty whatever the candidates write. ``keep`` names paths (the harness) the
    runner must still read once it has sealed the host's shared folders; ``hide``
    folders candidates must not read at all.
    """

    def __init__(self, python: str, runner_path: Path, work_mb: int = 256,
                 keep: tuple[str, ...] = (), hide: tuple[str, ...] = ()) -> None:
        self.folder = tempfile.mkdtemp(prefix="evo-runner-")
        self.root = os.path.join(self.folder, "work")
        mode = 0o711 if os.geteuid() == 0 else 0o700  # nobody may reach its own work dir
        os.chmod(self.folder, mode)
        os.mkdir(self.root, mode)
        os.chmod(self.root, mode)  # whatever the umask
        self.log_path = os.path.join(self.folder, "runner.log")
        # Our sys.path (site-packages, editable installs) only suits our own interpreter.
        same = Path(python).resolve() == Path(sys.executable).resolve()
        paths = [p for p in sys.path if p and os.path.isabs(p)] if same else []
        keeps = [arg for path in keep for arg in ("--keep", str(path))]
        keeps += [arg for path in hide for arg in ("--hide", str(path))]
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = subprocess.Popen(
                [python, "-I", "-B", str(runner_path), "--root", self.root,
                 "--folder", self.folder, "--work-mb", str(work_mb), *keeps,
                 "--sys-path", json.dumps(paths)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fd,
                env=clean_environment(self.root), cwd=self.folder, start_new_session=True)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        finally:
            os.close(log_fd)
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._buffer = bytearray()
        self._dead = False
        self.busy = False  # lent to a run(), which will close() it

    def alive(self) -> bool:
        return not self._dead and self.proc.poll() is None

    async def send(self, message: Any, timeout_s: float) -> None:
        """Write one frame (any JSON value); RunnerGone if the runner stopped reading."""
        view = memoryview(encode_frame(message))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while view:
            try:
                view = view[os.write(self._in, view):]
            except BlockingIOError:
                try:
                    await _ready(self._in, True, deadline)
                except asyncio.TimeoutError as exc:
                    raise RunnerGone("the runner stopped reading its input") from exc
            except OSError as exc:
                raise RunnerGone(f"cannot write to the runner: {exc}") from exc

    async def recv(self, timeout_s: float, max_bytes: int) -> dict[str, Any]:
        """Read one frame; asyncio.TimeoutError past ``timeout_s``, RunnerGone on
        end of file, an oversized frame or anything that is not a JSON object."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            message = take_frame(self._buffer, max_bytes)
            if message is not None:
                return message
            try:
                chunk = os.read(self._out, 1 << 20)
            except BlockingIOError:
                await _ready(self._out, False, deadline)
                continue
            except OSError as exc:
                raise RunnerGone(f"cannot read from the runner: {exc}") from exc
            if not chunk:
                raise RunnerGone("the runner exited")
            self._buffer += chunk

    def log_tail(self, chars: int = 1000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def close(self) -> None:
        """Kill, then close our end of its output (see ``kill``)."""
        self.kill()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()

    def kill(self) -> None:
        """Stop the runner, kill its evaluation's processes, then its session.

        Our end of its output stays open, so a run() waiting on it wakes at once
        with end of file rather than at its deadline; that run() then calls close().
        """
        if self._dead:
            return
        self._dead = True
        pid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
            kill_descendants(pid)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(OSError):  # reopen folders a candidate chmod-ed shut
            for current, dirs, _files in os.walk(self.folder):  # (without a work tmpfs)
                for full in (os.path.join(current, name) for name in dirs):
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
        shutil.rmtree(self.folder, ignore_errors=True)
