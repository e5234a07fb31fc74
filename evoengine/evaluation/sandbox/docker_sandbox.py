"""The ``docker`` sandbox backend: pre-started containers, reused from a pool.

Each container runs the in-sandbox runner (``sandbox/runner.py``, baked into the
image by ``evo sandbox build``) as its main process, so an evaluation costs one
fork of a warm interpreter inside an already running container, not a
``docker run`` (DESIGN.md, "Sandbox backend"). The pool, the frame protocol and the
replacement rules are the process backend's (``pool.PooledSandbox``); what Docker
adds is the cage around the runner, set once per container at creation:

* ``--network none``, a read-only root and a tmpfs at ``/work``, the runner's root:
  it makes one work dir per evaluation under it, points ``TMPDIR`` there, and after
  each evaluation wipes everything in ``/work``, since the candidate runs as the
  runner's uid and could write anywhere the runner can; no ``/tmp`` or ``/dev/shm``
  to write to (``--ipc none``), since those would be shared by every evaluation;
* the runner ignores every signal (as pid 1 of the container, no signal sent from
  inside then reaches it), so a candidate cannot end it; ``docker kill`` still can;
* memory (``memory_mb`` plus the runner's headroom, no swap), CPU (``cpus``) and
  pid (``max_processes`` plus a few for the runner) limits;
* user 65534:65534, every capability dropped, ``no-new-privileges``;
* an environment of our own making only, never the host's; no mounts but the
  harness file and the job's ``shared_dirs`` (the model proxy's socket folder),
  read-only at the same path (the candidate's code travels in the frames).

Because memory and pid limits belong to the container, the pool key is the job's
key together with those two limits. Docker API calls block, so they run in a small
thread pool of this sandbox and never stall the event loop. Every container is
labelled ``evoengine.sandbox=1``: ``docker ps -a --filter label=evoengine.sandbox=1``
finds leftovers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from pathlib import Path
from typing import Any

from evoengine.errors import first_line
from evoengine.evaluation.sandbox.base import HarnessJob, Limits
from evoengine.evaluation.sandbox.container_runner import ContainerRunner, kill_container
from evoengine.evaluation.sandbox.pool import PooledSandbox, stop_runner
from evoengine.evaluation.sandbox.runner_process import GRACE_S, RunnerGone, clean_environment
from evoengine.paths import resource_dir

DEFAULT_IMAGE = "evoengine-sandbox:latest"
LABEL = "evoengine.sandbox"
RUNNER_DIR = "/opt/evoengine/sandbox"  # where the image holds sandbox/runner*.py
HARNESS_DIR = "/opt/evoengine/job"  # where the harness copy is mounted, read-only
WORK_DIR = "/work"  # the tmpfs the runner makes its work dirs in, wiped after each
RUNNER_MEMORY_MB = 256  # the runner's own interpreter, numpy, and the copy-on-write fork
RUNNER_PIDS = 8  # the runner and whatever it runs besides the candidate
BUILD_HINT = "run `evo sandbox build`"
RUNNER_FILES = ("runner.py", "runner_child.py", "runner_os.py", "runner_codec.py",
                "runner_channel.py", "runner_candidate.py", "runner_reap.py", "evo_llm.py")
RUNNER_LABEL = "evoengine.sandbox.runner"  # image label: runner_digest() at build time


def runner_digest() -> str:
    """A digest of the runner files an image must carry (its ``RUNNER_LABEL``)."""
    digest = hashlib.sha256()
    for name in RUNNER_FILES:
        digest.update(name.encode() + b"\0" + (resource_dir("sandbox") / name).read_bytes())
    return digest.hexdigest()[:16]


def docker_unavailable_reason(image: str = DEFAULT_IMAGE) -> str | None:
    """None when a Docker daemon answers and has ``image``; else one line saying
    why not and what to do."""
    try:
        import docker
    except ImportError:
        return "the Docker SDK is not installed: pip install 'evoengine[docker]'"
    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException as exc:
        return f"no Docker daemon answers ({first_line(exc, 200)}): start it (`dockerd &`)"
    try:
        client.ping()
        built_with = client.images.get(image).labels.get(RUNNER_LABEL)
    except docker.errors.ImageNotFound:
        return f"the Docker image {image} does not exist: {BUILD_HINT}"
    except (docker.errors.DockerException, OSError) as exc:
        return f"the Docker daemon did not answer ({first_line(exc, 200)}): start it (`dockerd &`)"
    finally:
        client.close()
    if built_with and built_with != runner_digest():
        return f"the Docker image {image} holds an older sandbox runner: {BUILD_HINT}"
    return None


class DockerSandbox(PooledSandbox):
    """SandboxBackend ``docker``: a pool of pre-started containers per job and limits.

    ``await sandbox.run(code, job, limits)`` (concurrent calls share at most
    ``pool_size`` containers per key) and ``await sandbox.close()``, which kills and
    removes every container, also those in the middle of an evaluation (that run
    returns a ``sandbox`` error). Sync callers: ``run_sync`` and ``shutdown``.
    """

    name = "docker"

    def __init__(self, image: str = DEFAULT_IMAGE, pool_size: int = 2, cpus: float = 1.0,
                 tmpfs_mb: int = 256, grace_s: float = GRACE_S,
                 start_timeout_s: float = 60.0) -> None:
        if cpus <= 0:
            raise ValueError(f"cpus must be positive, got {cpus}")
        if tmpfs_mb < 1:
            raise ValueError(f"tmpfs_mb must be at least 1, got {tmpfs_mb}")
        super().__init__(pool_size=pool_size, grace_s=grace_s, start_timeout_s=start_timeout_s)
        import docker

        self.image = image
        self.cpus = cpus
        self.tmpfs_mb = tmpfs_mb
        self.client = docker.from_env(timeout=60)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="evo-docker")
        self._pending: set[concurrent.futures.Future] = set()  # disposals under way

    @property
    def network_isolated(self) -> bool:
        """Always: the containers have no network (``--network none``)."""
        return True

    def container_ids(self) -> list[str]:
        """Ids of the live pool's containers, for monitoring (and the tests)."""
        return sorted(r.container_id for r in self._live_runners())

    def container_settings(self, job: HarnessJob, limits: Limits,
                           harness_file: Path) -> dict[str, Any]:
        """The keyword arguments of ``docker.APIClient.create_container``."""
        memory = f"{limits.memory_mb + RUNNER_MEMORY_MB}m"
        host_config = self.client.api.create_host_config(
            network_mode="none", read_only=True,
            tmpfs={WORK_DIR: f"size={self.tmpfs_mb}m,mode=1777"}, ipc_mode="none",
            mem_limit=memory, memswap_limit=memory, nano_cpus=int(self.cpus * 1e9),
            pids_limit=limits.max_processes + RUNNER_PIDS,
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            binds={str(harness_file): {"bind": self._harness_path(job), "mode": "ro"},
                   **{path: {"bind": path, "mode": "ro"} for path in job.shared_dirs}},
            auto_remove=True, log_config={"Type": "none", "Config": {}})
        environment = clean_environment(WORK_DIR)
        environment["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # python:3.11-slim's python3
        return dict(
            image=self.image, user="65534:65534", host_config=host_config,
            entrypoint=["python3", "-I", "-B", f"{RUNNER_DIR}/runner.py"],
            command=["--root", WORK_DIR, "--no-netns", "--no-mountns"],
            environment=environment, hostname="sandbox",
            labels={LABEL: "1", f"{LABEL}.job": job.key[:200]},
            stdin_open=True, tty=False, detach=False,  # detach=False: StdinOnce
            network_disabled=True, use_config_proxy=False)  # no proxy variables either

    async def close(self) -> None:
        """Kill and remove every container (in parallel, off the event loop)."""
        futures = [self._threads.submit(stop_runner, r) for r in self._detach_all()]
        futures += list(self._pending)
        if futures:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures),
                                 return_exceptions=True)

    def shutdown(self) -> None:
        """``close`` for sync callers."""
        super().shutdown()
        concurrent.futures.wait(list(self._pending))

    # ---------------------------------------------------------- the pool

    def _pool_key(self, job: HarnessJob, limits: Limits) -> Hashable:
        return (job.key, job.candidate_process, job.shared_dirs, limits.memory_mb,
                limits.max_processes)

    def _harness_path(self, job: HarnessJob) -> str:
        """Inside the container: the read-only copy, under the harness's own name."""
        return f"{HARNESS_DIR}/{Path(job.harness_path).name}"

    async def _spawn(self, job: HarnessJob, limits: Limits) -> ContainerRunner:
        """Create, attach and start one container in a worker thread."""
        future = self._threads.submit(self._create, job, limits)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The thread goes on; whatever it starts is stopped as soon as it exists.
            future.add_done_callback(_close_orphan)
            raise

    def _create(self, job: HarnessJob, limits: Limits) -> ContainerRunner:
        import docker.errors

        harness_file, cleanup = _readable_harness(Path(job.harness_path))
        try:
            created = self.client.api.create_container(
                **self.container_settings(job, limits, harness_file))
        except (docker.errors.DockerException, OSError) as exc:
            cleanup()
            raise RunnerGone(f"cannot create a sandbox container from {self.image}: "
                             f"{first_line(exc, 200)}"
                             + (f"; {BUILD_HINT}" if "No such image" in str(exc) else "")
                             ) from exc
        try:
            return ContainerRunner(self.client, created["Id"], cleanup=cleanup)
        except BaseException as exc:
            kill_container(self.client, created["Id"])
            cleanup()
            if isinstance(exc, (docker.errors.DockerException, OSError)):
                raise RunnerGone(f"cannot start a sandbox container: {first_line(exc, 200)}"
                                 ) from exc
            raise

    def _dispose(self, runner: Any) -> Awaitable[None] | None:
        """Kill and remove the container in a worker thread; run() waits for it."""
        future = self._threads.submit(runner.close)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: nobody waits (close() still does)
            return None
        return asyncio.wrap_future(future, loop=loop)


def _close_orphan(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _nothing_to_clean() -> None:
    pass


def _readable_harness(harness: Path) -> tuple[Path, Callable[[], None]]:
    """The harness file to mount and a clean-up to run when the container is gone.

    A harness anyone may read is mounted as it is (read-only). Otherwise uid 65534
    could not read it inside, so a private, world-readable copy is made instead.
    """
    try:
        if harness.stat().st_mode & stat.S_IROTH:
            return harness.resolve(), _nothing_to_clean
        folder = Path(tempfile.mkdtemp(prefix="evo-harness-"))
    except OSError as exc:
        raise RunnerGone(f"cannot read the harness {harness}: {exc}") from exc
    try:
        os.chmod(folder, 0o755)
        copy = folder / harness.name
        shutil.copyfile(harness, copy)
        os.chmod(copy, 0o644)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise RunnerGone(f"cannot read the harness {harness}: {exc}") from exc
    return copy, partial(shutil.rmtree, folder, ignore_errors=True)
