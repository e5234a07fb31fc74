"""One resident runner inside a Docker container, seen from the host.

The container's main process is the same ``sandbox/runner.py`` the process backend
runs (baked into the image at ``/opt/evoengine/sandbox/``), and it speaks the same
length-prefixed JSON frames, over the container's stdin and stdout. We attach to
the container before starting it (so the hello frame cannot be missed) and read
the attach socket through whichever event loop is running, like
``runner_process.RunnerProcess`` reads its pipes. With ``tty=False`` Docker
multiplexes stdout and stderr on that socket behind 8-byte headers (stream id,
three zero bytes, a big-endian length); stdout feeds the frame parser, stderr a
bounded log.

The container is created with ``StdinOnce``: when our end of the attach socket
closes (``close()``, or this process dying), the runner reads end of file, exits,
and Docker removes the container (``AutoRemove``), so a host killed with SIGKILL
leaves nothing running. ``kill()`` does not wait for that: it kills and removes the
container through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from evoengine.evaluation.sandbox.runner_process import (
    RunnerGone,
    _ready,
    encode_frame,
    take_frame,
)

_STREAM_HEADER = 8  # Docker's multiplexing header: stream, 0, 0, 0, length (big-endian)
_STDOUT, _STDERR = 1, 2
_LOG_KEEP = 64 * 1024  # bytes of the runner's stderr we keep for log_tail()


class ContainerRunner:
    """A started container running the sandbox runner, and its attach socket.

    ``client`` is a ``docker.DockerClient``; ``container_id`` a created (not yet
    started) container whose stdin is open. ``cleanup`` runs once the container is
    gone (it removes the host copy of the harness).
    """

    def __init__(self, client: Any, container_id: str, cleanup: Any = None) -> None:
        self.client = client
        self.container_id = container_id
        self._cleanup = cleanup
        self._dead = False
        self._eof = False
        self._frames = bytearray()  # stdout: the runner's frames
        self._log = bytearray()  # stderr: the runner's own messages
        self._head = b""  # a Docker stream header split across reads
        self._stream = 0  # the stream of the entry being read
        self._left = 0  # bytes of that entry still to come
        self.busy = False  # lent to a run(), which will close() it
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        self._attached = client.api.attach_socket(container_id, params=params)
        try:
            self._sock: socket.socket = getattr(self._attached, "_sock", self._attached)
            if not isinstance(self._sock, socket.socket):
                raise RunnerGone("the Docker daemon must be reached through a unix or "
                                 "plain TCP socket (DOCKER_HOST), not SSH or TLS")
            self._sock.setblocking(False)
            client.api.start(container_id)
        except BaseException:
            self.close()
            raise
        self._fd = self._sock.fileno()

    # ------------------------------------------------------------- frames

    def alive(self) -> bool:
        if self._dead or self._eof:
            return False
        self._read_available()  # end of file here means the container has exited
        return not self._eof

    async def send(self, message: Any, timeout_s: float) -> None:
        """Write one frame (any JSON value) to the runner's stdin; RunnerGone if it
        stopped reading."""
        view = memoryview(encode_frame(message))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while view:
            if self._dead:
                raise RunnerGone("the container was killed")
            try:
                view = view[self._sock.send(view):]
            except (BlockingIOError, InterruptedError):
                try:
                    await _ready(self._fd, True, deadline)
                except asyncio.TimeoutError as exc:
                    raise RunnerGone("the runner stopped reading its input") from exc
            except OSError as exc:
                raise RunnerGone(f"cannot write to the container: {exc}") from exc

    async def recv(self, timeout_s: float, max_bytes: int) -> dict[str, Any]:
        """Read one frame; asyncio.TimeoutError past ``timeout_s``, RunnerGone on
        end of file, an oversized frame or anything that is not a JSON object."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            message = take_frame(self._frames, max_bytes)
            if message is not None:
                return message
            if self._eof or self._dead:
                raise RunnerGone("the container exited" if not self._dead
                                 else "the container was killed")
            if not self._read_available():
                await _ready(self._fd, False, deadline)

    def _read_available(self) -> bool:
        """Read what the socket holds now; False if there was nothing to read."""
        got = False
        while not self._eof:
            try:
                chunk = self._sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                return True
            got = True
            self._demux(chunk)
        return got

    def _demux(self, data: bytes) -> None:
        """Split Docker's stdout/stderr entries (headers may straddle reads)."""
        view, pos = memoryview(data), 0
        while pos < len(view):
            if self._left == 0:
                need = _STREAM_HEADER - len(self._head)
                self._head += bytes(view[pos:pos + need])
                pos += need
                if len(self._head) < _STREAM_HEADER:
                    return
                self._stream = self._head[0]
                self._left = struct.unpack_from(">I", self._head, 4)[0]
                self._head = b""
                continue
            take = min(self._left, len(view) - pos)
            part = view[pos:pos + take]
            pos += take
            self._left -= take
            if self._stream == _STDOUT:
                self._frames += part
            else:
                self._log += part
                if len(self._log) > 2 * _LOG_KEEP:
                    del self._log[:-_LOG_KEEP]

    def log_tail(self, chars: int = 1000) -> str:
        with contextlib.suppress(Exception):
            self._read_available()
        return bytes(self._log).decode("utf-8", errors="replace")[-chars:].strip()

    # ------------------------------------------------------------ stopping

    def close(self) -> None:
        """Kill and remove the container, then close our end of the socket."""
        self.kill()
        for closable in (self._attached, getattr(self, "_sock", None)):
            with contextlib.suppress(Exception):
                closable.close()
        response = getattr(self._attached, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup()

    def kill(self) -> None:
        """SIGKILL the container and remove it; blocks until Docker has done both.

        Our end of the socket stays open, so a run() waiting on it wakes at once
        with end of file rather than at its deadline; that run() then calls close().
        """
        if self._dead:
            return
        self._dead = True
        kill_container(self.client, self.container_id)


def kill_container(client: Any, container_id: str, wait_s: float = 30.0) -> None:
    """Kill and remove one container, whatever state it is in; never raises."""
    import docker.errors

    api = client.api
    with contextlib.suppress(docker.errors.DockerException):
        api.kill(container_id)
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:  # 409: AutoRemove is already removing it
        with contextlib.suppress(Exception):
            api.wait(container_id, timeout=wait_s, condition="removed")
    except Exception:  # the daemon went away; StdinOnce + AutoRemove still apply
        return
