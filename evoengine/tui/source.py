"""Open a run's archive for reading: a run folder, an ``archive.db`` file or a URL.

Browsing and reporting only read. The engine made here never creates tables (unlike
the store's ``make_engine``), so pointing ``evo browse`` at the wrong file cannot turn it
into an empty archive, and a sqlite URL to a missing file is refused instead of created.
SQLite readers in WAL mode never block the run that writes the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError

from evoengine.archive.url_checks import missing_driver, not_an_archive, unreadable
from evoengine.errors import UserError
from evoengine.paths import ARCHIVE_FILE


class ArchiveNotFound(UserError):
    """The target names no archive that can be read."""


def resolve_url(target: str) -> str:
    """The database URL of ``target``: a URL as given, or the SQLite file of a run folder
    (``runs/<name>``) or of an ``archive.db`` path."""
    if "://" in target:
        try:
            url = make_url(target)
        except ArgumentError as exc:
            raise ArchiveNotFound(f"{target} is not a database URL; give a run folder "
                                  "(runs/<name>) or a URL such as sqlite:///path") from exc
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if not database or database == ":memory:" or not Path(database).is_file():
                raise ArchiveNotFound(f"{target}: no such database file; give the "
                                      "archive.db of a run (see runs/)")
        return target
    path = Path(target)
    if path.is_dir():
        path = path / ARCHIVE_FILE
        if not path.is_file():
            raise ArchiveNotFound(f"{target} holds no {ARCHIVE_FILE}; give the folder of a "
                                  "run started with `evo run` (see runs/)")
    elif not path.is_file():
        raise ArchiveNotFound(f"{target}: no such run folder or file; give runs/<name> "
                              "or a database URL")
    return f"sqlite:///{path.resolve()}"


def open_archive_engine(target: str) -> Engine:
    """A read engine on ``target``; raises ``ArchiveNotFound`` when it is no archive."""
    url = resolve_url(target)
    try:
        engine = create_engine(url)
    except ModuleNotFoundError as exc:
        raise ArchiveNotFound(missing_driver(url, exc)) from exc
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_reader(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")  # wait out a writer's checkpoint
            cursor.close()

    try:
        problem = not_an_archive(target, inspect(engine).get_table_names())
    except DatabaseError as exc:  # a damaged file, one that is no database, a server down
        problem = unreadable(target, exc)
    if problem:
        engine.dispose()
        raise ArchiveNotFound(problem)
    return engine
