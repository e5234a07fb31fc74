"""The ``process`` sandbox backend: resident fork-server runners on this machine.

Each ``HarnessJob.key`` gets up to ``pool_size`` runners (``sandbox/runner.py``),
each started once with a clean environment in a session of its own, set up once
with the harness and instances, and then forking one fresh, limited child per
evaluation (DESIGN.md, "Sandbox backend"). Limits, the drop to ``nobody``, the
network namespace and the sweep of leftover processes all live in the runner; this
side moves frames, keeps the pool, and replaces a runner the moment it looks off
(it died, sent garbage, or missed ``timeout_s + grace_s``).

The runners are plain ``subprocess.Popen`` children whose pipes are read through
whichever event loop is running at the time of each call, rather than asyncio
subprocesses bound to the loop that started them. That is why one ``ProcessSandbox``
can outlive an event loop: sync code may call ``run_sync`` (one ``asyncio.run`` per
call) over and over and still pay runner start-up once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput
from evoengine.evaluation.sandbox.runner_process import (
    CONTROL_FRAME_MAX,
    ENVELOPE_BYTES,
    ERROR_KINDS,
    ESCAPING_FACTOR,
    GRACE_S,
    RunnerGone,
    RunnerProcess,
    resolve_waiter,
)
from evoengine.paths import resource_dir


@dataclasses.dataclass(eq=False)
class _Pool:
    """The runners of one HarnessJob.key: ``size`` counts idle, busy and starting ones."""

    idle: list[RunnerProcess] = dataclasses.field(default_factory=list)
    size: int = 0
    waiters: collections.deque = dataclasses.field(default_factory=collections.deque)
    closed: bool = False


def _kill_all(runners: set[RunnerProcess]) -> None:
    for runner in list(runners):
        (runner.kill if runner.busy else runner.close)()
    runners.clear()


class ProcessSandbox:
    """SandboxBackend ``process``: a pool of resident fork-server runners per job key.

    From async code: ``await sandbox.run(code, job, limits)`` (safe to call
    concurrently; calls beyond ``pool_size`` per key wait for a free runner) and
    ``await sandbox.close()``. From sync code: ``sandbox.run_sync(...)`` and
    ``sandbox.shutdown()``; the runners survive between event loops.
    """

    name = "process"

    def __init__(self, pool_size: int = 2, python: str = sys.executable,
                 runner_path: Path | None = None, grace_s: float = GRACE_S,
                 start_timeout_s: float = 60.0) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.pool_size = pool_size
        self.python = python
        self.runner_path = Path(runner_path or resource_dir("sandbox") / "runner.py")
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        self._pools: dict[str, _Pool] = {}
        self._network_isolated: bool | None = None
        self._everyone: set[RunnerProcess] = set()
        weakref.finalize(self, _kill_all, self._everyone)  # a forgotten close() leaks nothing

    @property
    def network_isolated(self) -> bool | None:
        """Whether the runners cut the network (None until one has started)."""
        return self._network_isolated

    def runner_pids(self) -> list[int]:
        """Pids of the live runners, for monitoring (and the tests)."""
        return sorted(r.proc.pid for r in self._everyone if r.alive())

    async def run(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput:
        """Run ``harness.run(candidate, job.instances)`` on ``code`` under ``limits``."""
        rejected = _check_syntax(code, job.module_name)
        if rejected is not None:
            return rejected
        frame = {"type": "eval", "code": code, "limits": dataclasses.asdict(limits)}
        started = time.monotonic()
        for attempt in range(2):
            try:
                pool, runner = await self._borrow(job)
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
                self._release(pool, runner, healthy)
        raise AssertionError("unreachable")

    def run_sync(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput:
        """``run`` for sync callers (not from inside a running event loop)."""
        return asyncio.run(self.run(code, job, limits))

    async def close(self) -> None:
        """Kill every runner and everything it started."""
        self.shutdown()

    def shutdown(self) -> None:
        """``close`` for sync callers. A later ``run`` starts fresh runners."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.closed = True  # busy runners are dropped when released
            pool.idle.clear()
            while pool.waiters:
                _wake_one(pool)
        _kill_all(self._everyone)

    async def _borrow(self, job: HarnessJob) -> tuple[_Pool, RunnerProcess]:
        """An idle runner for ``job``, a new one if the pool has room, else wait."""
        loop = asyncio.get_running_loop()
        while True:
            pool = self._pools.setdefault(job.key, _Pool())
            while pool.idle:
                runner = pool.idle.pop()
                if runner.alive():
                    runner.busy = True
                    return pool, runner
                self._drop(pool, runner)  # killed from outside while idle
            if pool.size < self.pool_size:
                pool.size += 1
                try:
                    runner = await self._start(job)
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

    async def _start(self, job: HarnessJob) -> RunnerProcess:
        """Start a runner, read its hello, send the setup, wait until it is ready."""
        try:
            runner = RunnerProcess(self.python, self.runner_path)
        except OSError as exc:
            raise RunnerGone(f"cannot start the sandbox runner {self.runner_path} "
                             f"with {self.python}: {exc}") from exc
        try:
            hello = await runner.recv(self.start_timeout_s, CONTROL_FRAME_MAX)
            if hello.get("type") != "hello":
                raise RunnerGone(f"expected hello, got {hello.get('type')!r}")
            self._network_isolated = bool(hello.get("network_isolated"))
            setup = {"type": "setup", "harness_path": str(Path(job.harness_path).resolve()),
                     "instances": job.instances, "module_name": job.module_name,
                     "preload": list(job.preload)}
            await runner.send(setup, self.start_timeout_s)
            ready = await runner.recv(self.start_timeout_s, CONTROL_FRAME_MAX)
            if not ready.get("ok"):
                raise RunnerGone(f"setup failed: {ready.get('message')}")
            return runner
        except (RunnerGone, asyncio.TimeoutError, TypeError, ValueError) as exc:
            detail = str(exc) or "no answer in time"
            tail = runner.log_tail()
            runner.close()
            raise RunnerGone(f"sandbox runner for {job.key!r} did not start: {detail}"
                             + (f"\n{tail}" if tail else "")) from exc
        except BaseException:
            runner.close()
            raise

    def _release(self, pool: _Pool, runner: RunnerProcess, healthy: bool) -> None:
        runner.busy = False
        if healthy and not pool.closed and runner.alive():
            pool.idle.append(runner)
        else:
            self._drop(pool, runner)
        _wake_one(pool)

    def _drop(self, pool: _Pool, runner: RunnerProcess) -> None:
        runner.close()
        pool.size -= 1
        self._everyone.discard(runner)


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
