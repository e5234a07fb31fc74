"""The pool of resident runners shared by the ``process`` and ``docker`` backends.

A runner is anything that speaks the frame protocol of ``sandbox/runner.py``: a
local fork server (``runner_process.RunnerProcess``) or the same runner as the main
process of a container (``container_runner.ContainerRunner``). ``PooledSandbox``
keeps up to ``pool_size`` of them per pool key, starts them on demand (hello,
setup, ready), lends one to each ``run``, and replaces a runner the moment it looks
off: it died, sent garbage, asked to retire, or missed ``timeout_s + grace_s``.
Subclasses say how to start a runner (``_spawn``, the runner factory) and, when a
runner is tied to more than the job (a container's memory limit), how to key it.

Waiters may sit on different event loops (sync callers use one ``asyncio.run`` per
call), so wake-ups go through ``call_soon_threadsafe`` on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
import weakref
from collections.abc import Awaitable, Hashable
from pathlib import Path
from typing import Any, Protocol

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput
from evoengine.evaluation.sandbox.runner_process import (
    CONTROL_FRAME_MAX,
    ENVELOPE_BYTES,
    ERROR_KINDS,
    ESCAPING_FACTOR,
    GRACE_S,
    RunnerGone,
    resolve_waiter,
)


class Runner(Protocol):
    """One resident runner as the pool sees it."""

    busy: bool  # lent to a run(), which will close() it or give it back

    def alive(self) -> bool: ...

    async def send(self, message: Any, timeout_s: float) -> None: ...  # any JSON value

    async def recv(self, timeout_s: float, max_bytes: int) -> dict[str, Any]: ...

    def log_tail(self, chars: int = 1000) -> str: ...

    def close(self) -> None: ...  # kill, then release our end of its channel

    def kill(self) -> None: ...  # stop it hard; a run() waiting on it wakes with EOF


@dataclasses.dataclass(eq=False)
class _Pool:
    """The runners of one pool key: ``size`` counts idle, busy and starting ones."""

    idle: list[Any] = dataclasses.field(default_factory=list)
    size: int = 0
    waiters: collections.deque = dataclasses.field(default_factory=collections.deque)
    closed: bool = False


def stop_runner(runner: Runner) -> None:
    """Kill a busy runner (its run() closes it), close an idle one."""
    (runner.kill if runner.busy else runner.close)()


def _kill_all(runners: set[Any]) -> None:
    for runner in list(runners):
        stop_runner(runner)
    runners.clear()


class PooledSandbox:
    """A SandboxBackend over pools of resident runners (see the module docstring).

    From async code: ``await sandbox.run(code, job, limits)`` (safe to call
    concurrently; calls beyond ``pool_size`` per key wait for a free runner) and
    ``await sandbox.close()``. From sync code: ``sandbox.run_sync(...)`` and
    ``sandbox.shutdown()``; the runners survive between event loops.
    """

    name = "pooled"

    def __init__(self, pool_size: int = 2, grace_s: float = GRACE_S,
                 start_timeout_s: float = 60.0) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.pool_size = pool_size
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        self._pools: dict[Hashable, _Pool] = {}
        self._everyone: set[Any] = set()
        weakref.finalize(self, _kill_all, self._everyone)  # a forgotten close() leaks nothing

    # ------------------------------------------------------ for subclasses

    async def _spawn(self, job: HarnessJob, limits: Limits) -> Runner:
        """The runner factory: start one runner (its hello is read by the pool).
        Raise RunnerGone (or OSError) with a one-line reason when it cannot start."""
        raise NotImplementedError

    def _pool_key(self, job: HarnessJob, limits: Limits) -> Hashable:
        """Runners are shared by runs with the same key (default: the job's key and
        where the candidate runs, both fixed at a runner's set-up)."""
        return job.key, job.candidate_process, job.shared_dirs, job.hidden_dirs

    def _harness_path(self, job: HarnessJob) -> str:
        """Where the runner finds the harness (default: the host path)."""
        return str(Path(job.harness_path).resolve())

    def _on_hello(self, hello: dict[str, Any]) -> None:
        """Look at a new runner's hello frame."""

    def _dispose(self, runner: Runner) -> Awaitable[None] | None:
        """Close a runner that left the pool; may hand back an awaitable for slow
        clean-ups (run() waits for it, without blocking the event loop)."""
        runner.close()
        return None

    # ------------------------------------------------------------- public

    async def run(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput:
        """Run ``harness.run(candidate, job.instances)`` on ``code`` under ``limits``."""
        rejected = _check_syntax(code, job.module_name)
        if rejected is not None:
            return rejected
        frame = {"type": "eval", "code": code, "limits": dataclasses.asdict(limits)}
        if job.env:
            frame["env"] = dict(job.env)
        started = time.monotonic()
        for attempt in range(2):
            try:
                pool, runner = await self._borrow(job, limits)
            except RunnerGone as exc:
                return RawOutput(ok=False, error=ErrorKind.SANDBOX, message=str(exc))
            healthy = False
            try:
                try:
                    await runner.send(frame, self.grace_s)
                except RunnerGone:
                    if attempt == 0:
                        continue  # it died while idle: nothing ran, try a fresh one
                    raise
                reply_cap = ESCAPING_FACTOR * limits.max_output_bytes + ENVELOPE_BYTES
                reply = await runner.recv(limits.timeout_s + self.grace_s, reply_cap)
                raw = _to_raw_output(reply)
                healthy = not reply.get("retire", False)
                return raw
            except asyncio.TimeoutError:
                return RawOutput(ok=False, error=ErrorKind.TIMEOUT,
                                 message=f"no answer within {limits.timeout_s + self.grace_s:g} s;"
                                         " the sandbox runner was replaced",
                                 wall_s=time.monotonic() - started)
            except RunnerGone as exc:
                tail = runner.log_tail()
                return RawOutput(ok=False, error=ErrorKind.SANDBOX,
                                 message=f"sandbox runner failed and was replaced: {exc}",
                                 stderr_tail=tail, wall_s=time.monotonic() - started)
            finally:
                disposal = self._release(pool, runner, healthy)
                if disposal is not None:
                    await asyncio.shield(disposal)
        raise AssertionError("unreachable")

    def run_sync(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput:
        """``run`` for sync callers (not from inside a running event loop)."""
        return asyncio.run(self.run(code, job, limits))

    async def close(self) -> None:
        """Kill every runner and everything it started."""
        self.shutdown()

    def shutdown(self) -> None:
        """``close`` for sync callers. A later ``run`` starts fresh runners."""
        _kill_all(self._detach_all())

    # ----------------------------------------------------------- the pool

    def _detach_all(self) -> set[Any]:
        """Forget every pool (waiters wake and start afresh); return every runner."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.closed = True  # busy runners are dropped when released
            pool.idle.clear()
            while pool.waiters:
                _wake_one(pool)
        runners = set(self._everyone)
        self._everyone.clear()
        return runners

    def _live_runners(self) -> list[Any]:
        return [runner for runner in self._everyone if runner.alive()]

    async def _borrow(self, job: HarnessJob, limits: Limits) -> tuple[_Pool, Runner]:
        """An idle runner for ``job``, a new one if the pool has room, else wait."""
        loop = asyncio.get_running_loop()
        key = self._pool_key(job, limits)
        while True:
            pool = self._pools.setdefault(key, _Pool())
            while pool.idle:
                runner = pool.idle.pop()
                if runner.alive():
                    runner.busy = True
                    return pool, runner
                self._drop(pool, runner)  # killed from outside while idle
            if pool.size < self.pool_size:
                pool.size += 1
                try:
                    runner = await self._start(job, limits)
                except BaseException:
                    pool.size -= 1
                    _wake_one(pool)
                    raise
                self._everyone.add(runner)
                runner.busy = True
                return pool, runner
            waiter = loop.create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    _wake_one(pool)  # pass on the wake-up we will not use
                raise
            finally:
                with contextlib.suppress(ValueError):
                    pool.waiters.remove(waiter)

    async def _start(self, job: HarnessJob, limits: Limits) -> Runner:
        """Start a runner, read its hello, send the setup, wait until it is ready."""
        runner = await self._spawn(job, limits)
        try:
            hello = await runner.recv(self.start_timeout_s, CONTROL_FRAME_MAX)
            if hello.get("type") != "hello":
                raise RunnerGone(f"expected hello, got {hello.get('type')!r}")
            self._on_hello(hello)
            setup = {"type": "setup", "harness_path": self._harness_path(job),
                     "module_name": job.module_name, "preload": list(job.preload),
                     "candidate_process": job.candidate_process}
            await runner.send(setup, self.start_timeout_s)
            # A frame of its own, which the runner keeps unparsed (sandbox/runner.py).
            await runner.send(job.instances, self.start_timeout_s)
            ready = await runner.recv(self.start_timeout_s, CONTROL_FRAME_MAX)
            if not ready.get("ok"):
                raise RunnerGone(f"setup failed: {ready.get('message')}")
            return runner
        except (RunnerGone, asyncio.TimeoutError, TypeError, ValueError) as exc:
            detail = str(exc) or "no answer in time"
            tail = runner.log_tail()
            disposal = self._dispose(runner)
            if disposal is not None:
                await asyncio.shield(disposal)
            raise RunnerGone(f"sandbox runner for {job.key!r} did not start: {detail}"
                             + (f"\n{tail}" if tail else "")) from exc
        except BaseException:
            self._dispose(runner)
            raise

    def _release(self, pool: _Pool, runner: Runner, healthy: bool) -> Awaitable[None] | None:
        runner.busy = False
        disposal = None
        if healthy and not pool.closed and runner.alive():
            pool.idle.append(runner)
        else:
            disposal = self._drop(pool, runner)
        _wake_one(pool)
        return disposal

    def _drop(self, pool: _Pool, runner: Runner) -> Awaitable[None] | None:
        pool.size -= 1
        self._everyone.discard(runner)
        return self._dispose(runner)


def _wake_one(pool: _Pool) -> None:
    """Wake the oldest waiter whose loop still runs (waiters may be on other loops)."""
    while pool.waiters:
        waiter = pool.waiters.popleft()
        if waiter.done():
            continue
        try:
            waiter.get_loop().call_soon_threadsafe(resolve_waiter, waiter)
            return
        except RuntimeError:  # its loop is closed
            continue


def _check_syntax(code: str, module_name: str) -> RawOutput | None:
    """Compile on the host (nothing runs) so a syntax error costs no fork."""
    try:
        compile(code, f"{module_name}.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return RawOutput(ok=False, error=ErrorKind.SYNTAX,
                         message=f"{type(exc).__name__}: {exc}"[:1000])
    return None


def _to_raw_output(reply: dict[str, Any]) -> RawOutput:
    """Decode a result frame; the output inside is untrusted JSON text."""
    if reply.get("type") != "result":
        raise RunnerGone(f"expected a result, got {reply.get('type')!r}")
    raw = RawOutput(ok=bool(reply.get("ok")), message=str(reply.get("message") or ""),
                    stderr_tail=str(reply.get("stderr_tail") or ""),
                    wall_s=float(reply.get("wall_s") or 0.0),
                    cpu_s=float(reply.get("cpu_s") or 0.0))
    if not raw.ok:
        error = reply.get("error")
        raw.error = ErrorKind(error) if error in ERROR_KINDS else ErrorKind.SANDBOX
        return raw
    try:
        raw.output = json.loads(reply["output_json"])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raw.ok, raw.error = False, ErrorKind.INVALID_OUTPUT
        raw.message = f"output is not valid JSON: {type(exc).__name__}: {exc}"[:1000]
    return raw

