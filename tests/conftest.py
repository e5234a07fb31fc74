"""Shared helpers: run the real `evo` command and read a run's archive."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

# Helper modules whose asserts should report the values they compared, as a test's do.
pytest.register_assert_rewrite("tests.adversarial_bench", "tests.adversarial_cases")

from tests.proc_table import descendants, process_table  # noqa: E402 - after the line above

REPO = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """``CI`` is set (``.ci/run`` sets it): prerequisites must be there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """A test's prerequisite (a Docker daemon, a kernel namespace) is missing: skip it
    locally, fail it under CI, where a silently skipped check would prove nothing."""
    if in_ci():
        pytest.fail(f"CI is set but this test cannot run: {reason}")
    pytest.skip(reason)


def load_problem_file(problem: str, name: str) -> types.ModuleType:
    """Import ``problems/<problem>/<name>.py`` (its harness, scorer or seed) on its own,
    under a name of its own, to call it directly in a test."""
    path = REPO / "problems" / problem / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{problem}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoengine.cli", *args]


@contextlib.contextmanager
def running_evo(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`evo ...` started in ``cwd`` with its output piped, for a test that signals it;
    killed and reaped on the way out if still running (a failed assertion must not
    leave an engine behind)."""
    process = subprocess.Popen(evo_command(*args), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def run_evo(tmp_path: Path):
    """Run `evo ...` in ``tmp_path`` and return the completed process."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(evo_command(*args), cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ))

    return _run


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for the whole session (tests/pg_server.py)."""
    from tests.pg_server import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


def archive_rows(db_path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(query).fetchall()


def program_signature(db_path: Path) -> list[tuple]:
    """What must match between two runs that should be identical (no timings)."""
    return archive_rows(db_path, """
        SELECT id, step, island, generation, parent_id, second_parent_id, operator, code,
               valid, score, error, cell, validation_score
        FROM programs ORDER BY id""")


def live_descendants() -> set[int]:
    """Non-zombie descendants of this test process (sandbox tests make it a child
    subreaper, so processes that escaped a sandbox show up here)."""
    return set(descendants(os.getpid()))


def reap_adopted_zombies() -> None:
    """Wait for exited processes this (subreaper) test process adopted."""
    for pid, (ppid, state, _cmd) in process_table().items():
        if ppid == os.getpid() and state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def calls_in_turn(client, count: int, messages: list[dict[str, str]] | None = None) -> list:
    """``count`` completions in turn through one model client (any of evoengine/llm),
    which is closed afterwards: each reply's text, or the LLMError it raised."""
    import asyncio

    from evoengine.llm.types import LLMError

    async def go() -> list:
        out: list = []
        try:
            for _ in range(count):
                try:
                    out.append((await client.complete(
                        messages or [{"role": "user", "content": "improve it"}],
                        temperature=0.5, max_tokens=64)).text)
                except LLMError as exc:
                    out.append(exc)
        finally:
            await client.close()
        return out

    return asyncio.run(go())
