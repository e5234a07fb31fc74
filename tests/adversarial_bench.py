"""Host-side machinery of tests/test_adversarial.py: the host that attacks aim at,
each sandbox backend with its Evaluator and leftover watch, and the clean probe."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import socket
import types
from pathlib import Path
from string import Template
from typing import Any

import pytest

from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from tests.adversarial_sources import FIRST_FIT_DECREASING, PROBE
from tests.conftest import live_descendants, reap_adopted_zombies, unavailable

DOCKER_IMAGE = "evoengine-sandbox:latest"
DOCKER_LABEL = "evoengine.sandbox=1"
MARK = "evoadv"  # every file an attack creates starts with this; the probe looks for it
SECRET_PREFIX = "evo-secret-"  # the host's secret values start with this


# --------------------------------------------------------------------- the host side


def _load_module(path: Path, name: str) -> types.ModuleType:
    """Import a trusted problem file on the host, outside ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The offline packing the harness-patching attack returns, run here from its source.
_ffd: dict[str, Any] = {}
exec(FIRST_FIT_DECREASING, _ffd)
_first_fit_decreasing = _ffd["_first_fit_decreasing"]


def _fingerprint(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns, info.st_mode


@dataclasses.dataclass
class Host:
    """Everything on the host that attacks aim at, and the trusted reference scores."""

    problem: Problem
    limits: Limits
    secrets: dict[str, str]
    root_marker: Path
    tmp_marker: Path
    secret_file: Path
    secret_text: str
    beacon_dir: Path
    listener: socket.socket
    dns_name: str
    reference: dict[str, float]
    protected: dict[Path, tuple[str, int, int]]

    @property
    def daemon_log(self) -> Path:
        return self.beacon_dir / f"{MARK}-daemon.log"

    def fields(self) -> dict[str, str]:
        return {"MARK": MARK, "SECRET_PREFIX": SECRET_PREFIX,
                "ROOT_MARKER": str(self.root_marker), "TMP_MARKER": str(self.tmp_marker),
                "SECRET_FILE": str(self.secret_file), "BEACON_DIR": str(self.beacon_dir),
                "PORT": str(self.listener.getsockname()[1]), "DNS_NAME": self.dns_name,
                "HARNESS_PATH": str(self.problem.harness_path)}

    def connections(self) -> int:
        """Connections the listening socket received (and closed) since last asked."""
        count = 0
        while True:
            try:
                conn, _addr = self.listener.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def assert_untouched(self, result: EvaluationResult) -> None:
        """Nothing any attack aims at outside the sandbox has changed."""
        for path, fingerprint in self.protected.items():
            assert _fingerprint(path) == fingerprint, f"{path} was modified"
        assert not self.root_marker.exists(), f"the candidate created {self.root_marker}"
        assert not self.tmp_marker.exists(), f"the candidate created {self.tmp_marker}"
        assert self.connections() == 0, "the host's listening socket got a connection"
        for key, value in self.secrets.items():
            assert os.environ.get(key) == value
            assert value not in result.feedback, f"{key} leaked into the feedback"
        assert self.secret_text not in result.feedback, "a root-only host file leaked"
        assert not [k for k in os.environ if k.startswith("EVO_ADV_PLANTED")]

    def remove_markers(self) -> None:
        for path in (self.root_marker, self.tmp_marker, self.daemon_log):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _resolvable_name() -> str:
    """A name the host resolves, so that failing inside the sandbox means something."""
    for name in ("pypi.org", "example.com", "github.com"):
        with contextlib.suppress(OSError):
            socket.getaddrinfo(name, 443)
            return name
    return "pypi.org"


# ------------------------------------------------------------------------ backends


class ProcessWatch:
    """Process backend: our only live descendants are the pool's runners."""

    def __init__(self, backend: ProcessSandbox) -> None:
        self.backend = backend

    def leftovers(self) -> list[str]:
        runners = set(self.backend.runner_pids())
        live = live_descendants()
        problems = []
        if len(runners) > 1:
            problems.append(f"{len(runners)} runners in a pool of one: {sorted(runners)}")
        if live != runners:
            problems.append(f"processes left behind: {sorted(live - runners)} "
                            f"(runners {sorted(runners)})")
        return problems

    def after_close(self) -> list[str]:
        live = live_descendants()
        return [f"processes left after close(): {sorted(live)}"] if live else []


class DockerWatch:
    """Docker backend: the labelled containers are the pool's, and each runs nothing
    but the runner (``docker top``).

    The daemon may be shared with other test runs, so a labelled container counts
    as ours once it has been in our pool (we look after every evaluation); one of
    ours that is alive but no longer in the pool was left behind.
    """

    def __init__(self, backend: Any) -> None:
        import docker

        self.backend = backend
        self.client = docker.from_env()
        self.seen: set[str] = set()

    def _labelled(self) -> list[Any]:
        return self.client.containers.list(filters={"label": DOCKER_LABEL})

    def leftovers(self) -> list[str]:
        pool = list(self.backend.container_ids())
        self.seen.update(pool)
        problems = []
        if len(pool) > 1:
            problems.append(f"{len(pool)} containers in a pool of one: {pool}")
        if not pool:
            problems.append("the pool has no live container after an evaluation")
        for container in self._labelled():
            if not _owned(container.id, pool):
                if _owned(container.id, list(self.seen)):
                    problems.append(f"container {container.short_id} outlived the pool")
                continue
            top = container.top()
            column = top["Titles"].index("CMD")
            commands = [row[column] for row in top.get("Processes") or []]
            if len(commands) > 1 or not all("runner.py" in c for c in commands):
                problems.append(f"container {container.short_id} runs more than the "
                                f"runner: {commands}")
        return problems

    def after_close(self) -> list[str]:
        left = [c.short_id for c in self._labelled() if _owned(c.id, list(self.seen))]
        return [f"containers left after close(): {left}"] if left else []


def _owned(full_id: str, ids: list[str]) -> bool:
    return any(full_id.startswith(i) or i.startswith(full_id) for i in ids if i)


def _docker_backend() -> Any:
    try:
        from evoengine.evaluation.sandbox.docker_sandbox import (
            DockerSandbox,
            docker_unavailable_reason,
        )
    except ImportError as exc:
        unavailable(f"the docker backend cannot be imported: {exc}")
    reason = docker_unavailable_reason(DOCKER_IMAGE)
    if reason is not None:
        unavailable(reason)
    return DockerSandbox(image=DOCKER_IMAGE, pool_size=1)


@dataclasses.dataclass
class Bench:
    """One backend with its Evaluator, event loop and leftover watch."""

    name: str
    backend: Any
    evaluator: Evaluator
    loop: asyncio.Runner
    watch: Any

    def evaluate(self, code: str) -> EvaluationResult:
        try:
            result = self.loop.run(self.evaluator.evaluate(code))
        except Exception as exc:  # the engine must survive every candidate
            pytest.fail(f"Evaluator.evaluate raised {type(exc).__name__}: {exc}")
        assert isinstance(result, EvaluationResult)
        return result

    def recycle(self) -> None:
        """Close the pool, so that the next evaluation starts a fresh one: after a
        failed case, so that one weakness does not fail the cases that follow it."""
        self.loop.run(self.backend.close())
        reap_adopted_zombies()

    def assert_nothing_left(self) -> None:
        problems = self.watch.leftovers()
        assert not problems, "; ".join(problems)


def _probe_code() -> str:
    return Template(PROBE).substitute(MARK=MARK, SECRET_PREFIX=SECRET_PREFIX)


def assert_probe_clean(bench: Bench, host: Host) -> None:
    """The next evaluation in the same pool slot starts clean and scores best fit."""
    probe = bench.evaluate(_probe_code())
    assert probe.valid, f"probe after the attack: {probe.error}: {probe.feedback[-1500:]}"
    assert probe.score == host.reference["best_fit"], probe
