"""Checks on a database URL before the store opens it: one that keeps nothing
(in-memory SQLite), one that must already hold an archive, and the one-line message
for a file that is damaged or no database at all."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from evoengine.errors import first_line


def in_memory_sqlite(url: str) -> bool:
    """Whether ``url`` is SQLite in memory (``sqlite://``, ``sqlite:///:memory:``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # create_engine says what is wrong with it
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def no_archive_reason(url: str) -> str | None:
    """Why the database at ``url`` holds no archive (no ``runs`` table, or no database
    at all), or None when it does or cannot be asked (the store's own engine then says
    what is wrong). Read by an engine of its own, without the store's pragmas: WAL mode
    would write to the file."""
    try:
        probe = create_engine(url)
    except (ArgumentError, ModuleNotFoundError):
        return None
    try:
        tables = inspect(probe).get_table_names()
    except OperationalError:
        return None  # a server down: the store's engine says so, with what to check
    except DatabaseError as exc:
        return unreadable_message(url, exc)
    finally:
        probe.dispose()
    if "runs" in tables:
        return None
    return (f"{hidden_password(url)} is not an evoengine archive (no table 'runs'); give "
            "the folder of a run started with `evo run` (see runs/)")


def unreadable_message(url: str, exc: DatabaseError) -> str:
    return (f"{hidden_password(url)} cannot be read as an archive "
            f"({first_line(exc.orig or exc)}): the file is damaged or not a database; "
            "give another run folder or db.url (a damaged run may be restored from a copy)")


def hidden_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
