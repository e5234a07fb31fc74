"""Choose the sandbox backend: ``sandbox.backend`` on this machine, or, with
``executor=ray``, the Ray backend that runs that sandbox on every node of a cluster."""

from __future__ import annotations

from evoengine.config.compose import ConfigError
from evoengine.config.scale_schema import ExecutorConfig, RayConfig
from evoengine.config.schema import SandboxConfig
from evoengine.evaluation.sandbox.base import SandboxBackend


def make_backend(config: SandboxConfig, executor: ExecutorConfig | None = None,
                 ray: RayConfig | None = None) -> tuple[SandboxBackend, str]:
    """Return the backend and the one line the run prints about it: the local sandbox
    (``make_local_backend``), or with ``executor.kind == "ray"`` a ``RaySandbox``
    connected to ``ray.address`` (ConfigError when no cluster answers there)."""
    if executor is not None and executor.kind == "ray":
        from evoengine.evaluation.sandbox.ray_backend import RaySandbox

        backend = RaySandbox(ray or RayConfig(), config)
        return backend, backend.connect()
    return make_local_backend(config)


def make_local_backend(config: SandboxConfig) -> tuple[SandboxBackend, str]:
    """Return this machine's sandbox and the one line the run prints about it.

    ``docker`` fails (ConfigError) when no daemon answers or the image is missing;
    ``auto`` falls back to ``process`` then, and says why.
    """
    from evoengine.evaluation.sandbox.docker_sandbox import (
        DockerSandbox,
        docker_unavailable_reason,
    )
    from evoengine.evaluation.sandbox.process import ProcessSandbox

    if config.backend in ("docker", "auto"):
        reason = docker_unavailable_reason(config.image)
        if reason is None:
            backend = DockerSandbox(image=config.image, pool_size=config.pool_size,
                                    cpus=config.cpus, tmpfs_mb=config.tmpfs_mb)
            how = "sandbox=auto found " if config.backend == "auto" else ""
            return backend, (f"sandbox: docker ({how}image {config.image}); pooled containers, "
                             "no network, read-only root, memory/CPU/pid limits")
        if config.backend == "docker":
            raise ConfigError(f"sandbox=docker: {reason} (or use sandbox=process)")
    backend = ProcessSandbox(pool_size=config.pool_size, tmpfs_mb=config.tmpfs_mb)
    if config.backend == "auto":
        note = (f"sandbox: process (sandbox=auto: {reason}); forked children with "
                "rlimits, a clean environment and no network")
    else:
        note = "sandbox: process"
    return backend, note
