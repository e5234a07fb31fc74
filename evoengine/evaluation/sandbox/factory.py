"""Choose the sandbox backend named by ``sandbox.backend``."""

from __future__ import annotations

from evoengine.config.schema import SandboxConfig
from evoengine.evaluation.sandbox.base import SandboxBackend


def make_backend(config: SandboxConfig) -> tuple[SandboxBackend, str]:
    """Return the backend and the one line the run prints about it."""
    from evoengine.evaluation.sandbox.process import ProcessSandbox

    backend = ProcessSandbox(pool_size=config.pool_size)
    if config.backend == "auto":
        note = ("sandbox: process (sandbox=auto; forked children with rlimits, a clean "
                "environment and no network)")
    else:
        note = "sandbox: process"
    return backend, note
