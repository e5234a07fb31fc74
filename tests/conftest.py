"""Shared helpers: run the real `evo` command and read a run's archive."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def evo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoengine.cli.main", *args]


@pytest.fixture
def run_evo(tmp_path: Path):
    """Run `evo ...` in ``tmp_path`` and return the completed process."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(evo_command(*args), cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ))

    return _run


def archive_rows(db_path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(query).fetchall()


def program_signature(db_path: Path) -> list[tuple]:
    """What must match between two runs that should be identical (no timings)."""
    return archive_rows(db_path, """
        SELECT id, step, island, generation, parent_id, second_parent_id, operator, code,
               valid, score, error, cell, validation_score
        FROM programs ORDER BY id""")
