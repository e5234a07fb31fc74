"""The ``process`` sandbox backend: resident fork-server runners on this machine.

Each ``HarnessJob.key`` gets up to ``pool_size`` runners (``sandbox/runner.py``),
each started once with a clean environment in a session of its own, set up once
with the harness and instances, and then forking one fresh, limited child per
evaluation (DESIGN.md, "Sandbox backend"). Limits, the drop to ``nobody``, the
network and mount namespaces (read-only ``/tmp`` and friends, work dirs on a tmpfs of
``tmpfs_mb`` MiB), the sweep of leftover processes and the wipe of leftover files
all live in the runner; the
pool (``pool.PooledSandbox``) moves frames and replaces a runner the moment it looks
off (it died, sent garbage, or missed ``timeout_s + grace_s``).

The runners are plain ``subprocess.Popen`` children whose pipes are read through
whichever event loop is running at the time of each call, rather than asyncio
subprocesses bound to the loop that started them. That is why one ``ProcessSandbox``
can outlive an event loop: sync code may call ``run_sync`` (one ``asyncio.run`` per
call) over and over and still pay runner start-up once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from evoengine.evaluation.sandbox.base import HarnessJob, Limits
from evoengine.evaluation.sandbox.pool import PooledSandbox
from evoengine.evaluation.sandbox.runner_process import GRACE_S, RunnerGone, RunnerProcess
from evoengine.paths import resource_dir


class ProcessSandbox(PooledSandbox):
    """SandboxBackend ``process``: a pool of resident fork-server runners per job key.

    From async code: ``await sandbox.run(code, job, limits)`` (safe to call
    concurrently; calls beyond ``pool_size`` per key wait for a free runner) and
    ``await sandbox.close()``. From sync code: ``sandbox.run_sync(...)`` and
    ``sandbox.shutdown()``; the runners survive between event loops.
    """

    name = "process"

    def __init__(self, pool_size: int = 2, python: str = sys.executable,
                 runner_path: Path | None = None, grace_s: float = GRACE_S,
                 start_timeout_s: float = 60.0, tmpfs_mb: int = 256) -> None:
        if tmpfs_mb < 1:
            raise ValueError(f"tmpfs_mb must be at least 1, got {tmpfs_mb}")
        super().__init__(pool_size=pool_size, grace_s=grace_s, start_timeout_s=start_timeout_s)
        self.python = python
        self.runner_path = Path(runner_path or resource_dir("sandbox") / "runner.py")
        self.tmpfs_mb = tmpfs_mb
        self._network_isolated: bool | None = None
        self._files_isolated: bool | None = None

    @property
    def network_isolated(self) -> bool | None:
        """Whether the runners cut the network (None until one has started)."""
        return self._network_isolated

    @property
    def files_isolated(self) -> bool | None:
        """Whether the runners' work dirs are a tmpfs of ``tmpfs_mb`` MiB and the
        host's shared folders read-only to candidates (None until one has started)."""
        return self._files_isolated

    def runner_pids(self) -> list[int]:
        """Pids of the live runners, for monitoring (and the tests)."""
        return sorted(r.proc.pid for r in self._live_runners())

    def runner_roots(self) -> list[str]:
        """The live runners' work roots as this host sees them: empty while the
        runners have their own tmpfs there (``files_isolated``)."""
        return sorted(r.root for r in self._live_runners())

    async def _spawn(self, job: HarnessJob, limits: Limits) -> RunnerProcess:
        try:
            return RunnerProcess(self.python, self.runner_path, work_mb=self.tmpfs_mb,
                                 keep=(self._harness_path(job), *job.shared_dirs),
                                 hide=job.hidden_dirs)
        except OSError as exc:
            raise RunnerGone(f"cannot start the sandbox runner {self.runner_path} "
                             f"with {self.python}: {exc}") from exc

    def _on_hello(self, hello: dict[str, Any]) -> None:
        self._network_isolated = bool(hello.get("network_isolated"))
        self._files_isolated = bool(hello.get("files_isolated"))
