"""The docker sandbox backend: pooled containers with the cage DESIGN.md promises.

Needs a Docker daemon and the image (`evo sandbox build`). Without them these tests
skip, except under CI (``CI`` set), where a missing daemon or image is a failure:
a CI run that silently skipped the sandbox would prove nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evoengine.config.compose import ConfigError
from evoengine.config.schema import SandboxConfig
from evoengine.evaluation.result import ErrorKind
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput
from evoengine.evaluation.sandbox.docker_sandbox import (
    DEFAULT_IMAGE,
    LABEL,
    RUNNER_MEMORY_MB,
    RUNNER_PIDS,
    DockerSandbox,
    docker_unavailable_reason,
)
from evoengine.evaluation.sandbox.factory import make_backend
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.conftest import archive_rows, unavailable

pytestmark = pytest.mark.docker

HARNESS = "def run(candidate, instances):\n    return [candidate.f(x) for x in instances]\n"
GOOD = "def f(x):\n    return x * 2\n"
LIMITS = Limits(timeout_s=2.0, cpu_s=5, memory_mb=512, max_processes=16, max_file_mb=1,
                max_output_bytes=100_000)
SECRET = "EVO_DOCKER_TEST_SECRET"



@pytest.fixture(scope="module")
def docker() -> Iterator[Any]:
    """A Docker client; skips (fails under CI) without a daemon or the image."""
    reason = docker_unavailable_reason(DEFAULT_IMAGE)
    if reason is not None:
        unavailable(f"the docker sandbox is unavailable: {reason}")
    import docker as docker_sdk

    client = docker_sdk.from_env()
    yield client
    client.close()


@pytest.fixture
def job(tmp_path: Path) -> HarnessJob:
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    harness.chmod(0o600)  # the sandbox must still read it as uid 65534
    return HarnessJob(key=f"docker-test/{tmp_path.name}", harness_path=harness,
                      instances=[1, 2, 3])


def labelled(docker: Any, job: HarnessJob) -> list[Any]:
    """This test's containers (by the job label), running or not."""
    return docker.containers.list(all=True, filters={"label": [f"{LABEL}=1",
                                                               f"{LABEL}.job={job.key}"]})


@pytest.fixture
def sandbox(docker: Any, job: HarnessJob) -> Iterator[DockerSandbox]:
    backend = DockerSandbox(pool_size=2)
    yield backend
    backend.shutdown()
    assert labelled(docker, job) == [], "containers left behind after close()"


def run(backend: DockerSandbox, code: str, job: HarnessJob, limits: Limits = LIMITS) -> RawOutput:
    return asyncio.run(backend.run(code, job, limits))


def test_good_candidate_returns_output_and_container_is_reused(docker, sandbox, job):
    code = ("import os\nimport numpy as np\n"
            "def f(x):\n    return [int(np.int64(x) * 3), os.getuid(), os.getcwd()]\n")
    first = run(sandbox, code, job)
    assert first.ok and first.error is None, first
    assert [value for value, _uid, _cwd in first.output] == [3, 6, 9]
    assert {uid for _value, uid, _cwd in first.output} == {65534}
    assert first.output[0][2].startswith("/work/")  # a work dir on the tmpfs
    ids = sandbox.container_ids()
    assert len(ids) == 1 and [c.id for c in labelled(docker, job)] == ids
    second = sandbox.run_sync(GOOD, job, LIMITS)  # another event loop, same container
    assert second.output == [2, 4, 6]
    timeout = run(sandbox, "def f(x):\n    while True:\n        pass\n", job,
                  dataclasses.replace(LIMITS, timeout_s=1.0))
    assert timeout.error is ErrorKind.TIMEOUT, timeout  # the runner stopped it in time...
    assert run(sandbox, GOOD, job).output == [2, 4, 6]
    assert sandbox.container_ids() == ids  # ...so the container is kept


def test_container_settings_are_applied(docker, job, monkeypatch):
    monkeypatch.setenv(SECRET, "s3cret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    backend = DockerSandbox(pool_size=1, cpus=0.5, tmpfs_mb=64)
    try:
        probe = ("import os, socket\n"
                 "def writable(path):\n"
                 "    try:\n"
                 "        open(path, 'a').close()\n"
                 "        return True\n"
                 "    except OSError:\n"
                 "        return False\n"
                 "def f(x):\n"
                 "    try:\n"
                 "        socket.create_connection(('1.1.1.1', 53), timeout=1).close()\n"
                 "        net = 'connected'\n"
                 "    except OSError:\n"
                 "        net = 'blocked'\n"
                 "    places = ['/opt/evoengine/sandbox/runner.py', '/tmp/x', '/dev/shm/x',\n"
                 "              '/var/tmp/x', '/etc/passwd']\n"
                 "    return [dict(os.environ), net, [p for p in places if writable(p)]]\n")
        result = run(backend, probe, job)
        assert result.ok, result
        environ, net, writable = result.output[0]
        assert net == "blocked" and writable == []
        assert SECRET not in environ and "OPENAI_API_KEY" not in environ
        assert "s3cret-value" not in repr(environ)

        [container_id] = backend.container_ids()
        attrs = docker.api.inspect_container(container_id)
        host, config = attrs["HostConfig"], attrs["Config"]
        assert host["NetworkMode"] == "none"
        assert [n for n in attrs["NetworkSettings"]["Networks"]] in ([], ["none"])
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Privileged"] is False
        assert config["User"] == "65534:65534"
        memory = (LIMITS.memory_mb + RUNNER_MEMORY_MB) << 20
        assert host["Memory"] == memory and host["MemorySwap"] == memory  # no swap
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == LIMITS.max_processes + RUNNER_PIDS
        assert host["Tmpfs"] == {"/work": "size=64m,mode=1777"}  # the only writable place
        assert host["IpcMode"] == "none"  # no /dev/shm either
        # no mounts but the harness, read-only
        assert [(m["Type"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
            ("bind", f"/opt/evoengine/job/{job.harness_path.name}", False)]
        env = dict(item.split("=", 1) for item in config["Env"])
        assert SECRET not in env and "OPENAI_API_KEY" not in env
        assert "s3cret-value" not in repr(config["Env"])
        assert not any(key.lower().endswith("_proxy") for key in env)
        assert config["Labels"][LABEL] == "1"
    finally:
        backend.shutdown()
    assert labelled(docker, job) == []


def test_stuck_runner_is_killed_and_replaced(docker, job):
    backend = DockerSandbox(pool_size=1, grace_s=0.5)
    try:
        assert run(backend, GOOD, job).ok
        [old] = backend.container_ids()

        async def freeze_mid_evaluation() -> RawOutput:
            task = asyncio.ensure_future(backend.run(
                "import time\ndef f(x):\n    time.sleep(0.3)\n    return x\n", job,
                dataclasses.replace(LIMITS, timeout_s=1.0)))
            await asyncio.sleep(0.3)
            docker.api.pause(old)  # the runner can no longer answer at all
            return await task

        start = time.monotonic()
        result = asyncio.run(freeze_mid_evaluation())
        assert result.error is ErrorKind.TIMEOUT, result
        assert time.monotonic() - start < 15
        assert docker.containers.list(all=True, filters={"id": old}) == [], "not removed"
        assert run(backend, GOOD, job).output == [2, 4, 6]
        [new] = backend.container_ids()
        assert new != old
    finally:
        backend.shutdown()


def test_container_killed_from_outside_is_replaced(docker, sandbox, job):
    assert run(sandbox, GOOD, job).ok
    [old] = sandbox.container_ids()
    docker.api.kill(old)  # while idle: the next run notices and starts another
    time.sleep(0.5)
    assert run(sandbox, GOOD, job).output == [2, 4, 6]
    [new] = sandbox.container_ids()
    assert new != old

    async def kill_mid_evaluation() -> RawOutput:
        task = asyncio.ensure_future(
            sandbox.run("import time\ndef f(x):\n    time.sleep(5)\n", job, LIMITS))
        await asyncio.sleep(0.5)
        docker.api.kill(new)
        return await task

    result = asyncio.run(kill_mid_evaluation())
    assert result.error is ErrorKind.SANDBOX, result
    assert run(sandbox, GOOD, job).output == [2, 4, 6]
    assert new not in sandbox.container_ids()


def test_close_ends_running_evaluations_and_removes_every_container(docker, sandbox, job):
    async def close_mid_evaluation() -> list[RawOutput]:
        slow = "import time\ndef f(x):\n    time.sleep(30)\n"
        limits = dataclasses.replace(LIMITS, timeout_s=30.0, cpu_s=30)
        tasks = [asyncio.ensure_future(sandbox.run(slow, job, limits))
                 for _ in range(2)]
        await asyncio.sleep(1.0)
        assert len(labelled(docker, job)) == 2
        await sandbox.close()
        return await asyncio.gather(*tasks)

    start = time.monotonic()
    results = asyncio.run(close_mid_evaluation())
    assert all(r.error is ErrorKind.SANDBOX for r in results), results
    assert time.monotonic() - start < 15  # ended, not left to sleep their 30 s
    assert labelled(docker, job) == []
    assert run(sandbox, GOOD, job).output == [2, 4, 6]  # a later run starts afresh


def test_limits_that_differ_get_their_own_containers(sandbox, job):
    assert run(sandbox, GOOD, job).ok
    bigger = dataclasses.replace(LIMITS, memory_mb=1024)
    assert run(sandbox, GOOD, job, bigger).ok
    assert len(sandbox.container_ids()) == 2


def test_evo_run_with_docker_sandbox(docker, run_evo, tmp_path):
    result = run_evo("run", "problem=bin_packing_quick", "sandbox=docker",
                     "search.max_evaluations=10", "ui=plain", "llm=gp", "name=dock")
    assert result.returncode == 0, result.stderr
    assert "sandbox: docker" in result.stdout
    db = tmp_path / "runs" / "dock" / "archive.db"
    assert archive_rows(db, "SELECT COUNT(*) FROM evaluations WHERE split='train'")[0][0] == 10
    assert archive_rows(db, "SELECT COUNT(*) FROM programs WHERE error='sandbox'")[0][0] == 0


def test_auto_picks_docker_when_the_image_exists(docker):
    backend, note = make_backend(SandboxConfig(backend="auto"))
    try:
        assert isinstance(backend, DockerSandbox) and note.startswith("sandbox: docker")
    finally:
        asyncio.run(backend.close())
    missing = "evoengine-sandbox:no-such-tag"
    fallback, note = make_backend(SandboxConfig(backend="auto", image=missing))
    assert isinstance(fallback, ProcessSandbox)
    assert note.startswith("sandbox: process") and "evo sandbox build" in note
    with pytest.raises(ConfigError, match="evo sandbox build"):
        make_backend(SandboxConfig(backend="docker", image=missing))
