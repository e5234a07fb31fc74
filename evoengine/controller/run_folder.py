"""The files of a run's folder besides what the database holds: its ``config.yaml``,
and a SQLite archive that a start cut short (Ctrl-C, SIGKILL) left holding no run."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from evoengine.archive.models import Base
from evoengine.paths import ARCHIVE_FILE

CONFIG_FILE = "config.yaml"
# SQLite's files beside the database (the run locks, archive.db-run<id>.lock, too)
_SIDE_FILE_PATTERNS = ("-wal", "-shm", "-journal")


def save_config(run_dir: Path, plain: dict[str, Any]) -> None:
    """Write ``run_dir/config.yaml`` whole or not at all (a new file renamed over the
    old one): a resume rewrites it with the config it runs under."""
    path = Path(run_dir) / CONFIG_FILE
    partial = path.with_name(f".{CONFIG_FILE}.partial")
    OmegaConf.save(OmegaConf.create(plain), partial)
    os.replace(partial, path)


def holds_no_run(db_path: Path) -> bool:
    """Whether the SQLite file at ``db_path`` is what an `evo run` stopped during its
    start leaves: no table but the archive's own (possibly none at all, an empty
    file) and no row in ``runs``. Anything else, or a file SQLite cannot read, is
    kept: it may hold someone's data."""
    ours = set(Base.metadata.tables) | {"alembic_version"}
    try:
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables <= ours:
                return False
            return "runs" not in tables or db.execute(
                "SELECT count(*) FROM runs").fetchone()[0] == 0
    except sqlite3.Error:
        return False


def clear_unstarted_archive(run_dir: Path) -> bool:
    """Remove ``run_dir``'s archive (with SQLite's side files and run locks) when it
    holds no run (:func:`holds_no_run`), so that `evo run name=...` can start again
    where an interrupted start left off; whether it did."""
    db_path = Path(run_dir) / ARCHIVE_FILE
    if not db_path.is_file() or not holds_no_run(db_path):
        return False
    leftovers = [db_path.with_name(ARCHIVE_FILE + suffix) for suffix in _SIDE_FILE_PATTERNS]
    leftovers += list(Path(run_dir).glob(f"{ARCHIVE_FILE}-run*.lock"))
    for path in [db_path, *leftovers]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True
