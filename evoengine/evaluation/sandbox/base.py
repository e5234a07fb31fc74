"""The sandbox backend contract (DESIGN.md, "Sandbox backend").

A backend runs ``harness.run(candidate_module, instances)`` on untrusted candidate
code, under limits, and brings back the harness's JSON-serialisable return value.
It never scores: the host does that with the problem's trusted ``score.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evoengine.evaluation.result import ErrorKind


@dataclass(frozen=True)
class Limits:
    """Resource limits for one evaluation."""

    timeout_s: float = 30.0  # wall clock; the whole process tree is killed past it
    cpu_s: int = 30  # RLIMIT_CPU
    memory_mb: int = 2048  # RLIMIT_AS (address space)
    max_processes: int = 32  # RLIMIT_NPROC, counted for the sandbox user
    max_file_mb: int = 16  # RLIMIT_FSIZE
    max_output_bytes: int = 8 * 1024 * 1024  # raw output larger than this is invalid_output


@dataclass(frozen=True)
class HarnessJob:
    """What to run the candidate on. One resident runner serves one ``key``."""

    key: str  # e.g. "bin_packing/train": identifies harness + instances
    harness_path: Path  # the problem's harness.py (trusted, read-only to the candidate)
    instances: list[Any]  # JSON-serialisable; sent to the runner once per key
    module_name: str = "candidate"  # the candidate is imported under this name
    preload: tuple[str, ...] = ("numpy",)  # imported once by the resident runner
    # Import the candidate in a process of its own, which the harness calls over a
    # pipe (ProblemConfig.candidate_process); False: into the harness's process.
    candidate_process: bool = True
    # Per-evaluation environment variables of the process that runs the harness (not
    # part of the runner pool key): e.g. the token of the engine's model proxy.
    env: tuple[tuple[str, str], ...] = ()
    # Host folders shown read-only at the same path inside the sandbox (the folder of
    # a UNIX socket the engine serves): the process backend keeps them visible in
    # the runner's mount namespace; docker bind-mounts them read-only.
    shared_dirs: tuple[str, ...] = ()
    # Host folders candidates must not read (hidden test data): the process backend
    # covers them with an empty tmpfs; docker never mounts them in the first place.
    hidden_dirs: tuple[str, ...] = ()


@dataclass
class RawOutput:
    """What came back from one sandboxed run (untrusted data)."""

    ok: bool  # the harness returned and its output decoded as JSON
    output: Any = None
    error: ErrorKind | None = None
    message: str = ""  # one line: why it failed
    stderr_tail: str = ""  # the last lines the candidate wrote to stderr/stdout
    wall_s: float = 0.0
    cpu_s: float = 0.0


class SandboxBackend(Protocol):
    """``run(code, job, limits) -> RawOutput``; safe to call concurrently."""

    name: str

    async def run(self, code: str, job: HarnessJob, limits: Limits) -> RawOutput: ...

    async def close(self) -> None: ...
