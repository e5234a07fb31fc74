"""The node side of ``executor=ray``: one actor per Ray node holding that node's own
sandbox backend (``process`` or ``docker``, chosen on the node from ``sandbox.*``).

The actor only runs candidates and returns their ``RawOutput``; scoring stays with
the controller, which never trusts a node with more than a sandbox run. A job's
instances and harness source travel once per job key through Ray's object store
(the controller ``ray.put``s them) and are cached here; a node that lacks the
harness file at the controller's path gets a copy written to a folder of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput


@dataclasses.dataclass(frozen=True)
class ShippedJob:
    """What the controller puts in the object store for one job key."""

    job: HarnessJob
    harness_source: bytes


class NodeSandbox:
    """Ray actor class (wrapped by ``ray.remote`` in ``ray_backend``): serves
    ``run`` calls concurrently, up to the actor's ``max_concurrency``."""

    def __init__(self, sandbox_config: dict[str, Any], slots: int) -> None:
        from evoengine.config.schema import SandboxConfig
        from evoengine.evaluation.sandbox.factory import make_local_backend

        config = SandboxConfig(**sandbox_config)
        config.pool_size = slots
        self.backend, self.note = make_local_backend(config)
        self.host = socket.gethostname()
        self._jobs: dict[str, HarnessJob] = {}
        # made only when a harness must be copied here (a node without the controller's
        # files), so a node that shares them leaves nothing behind even if killed
        self._harness_dir: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"host": self.host, "pid": os.getpid(), "sandbox": self.note}

    async def run(self, code: str, key: str, shipped: list[Any], limits: Limits
                  ) -> RawOutput:
        """Run one candidate. ``shipped`` is ``[ObjectRef of ShippedJob]``, in a list so
        that Ray hands over the reference and the job is fetched only on a cache miss."""
        try:
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = self._localise(await shipped[0])
            return await self.backend.run(code, job, limits)
        except Exception as exc:  # the engine's fault, not the candidate's: say so
            return RawOutput(ok=False, error=ErrorKind.SANDBOX,
                             message=f"sandbox on Ray node {self.host} failed: "
                                     f"{type(exc).__name__}: {exc}")

    def _localise(self, shipped: ShippedJob) -> HarnessJob:
        """The job with a harness path that exists on this node with the same bytes."""
        path = Path(shipped.job.harness_path)
        with contextlib.suppress(OSError):
            if path.is_file() and path.read_bytes() == shipped.harness_source:
                return shipped.job
        digest = hashlib.sha256(shipped.harness_source).hexdigest()[:16]
        if self._harness_dir is None:
            self._harness_dir = Path(tempfile.mkdtemp(prefix="evo-ray-harness-"))
            self._harness_dir.chmod(0o755)  # the sandbox user (nobody) reads the harness
        local = self._harness_dir / digest / path.name
        local.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        local.write_bytes(shipped.harness_source)
        local.chmod(0o644)
        return dataclasses.replace(shipped.job, harness_path=local)

    async def close(self) -> None:
        await self.backend.close()
        if self._harness_dir is not None:
            shutil.rmtree(self._harness_dir, ignore_errors=True)
