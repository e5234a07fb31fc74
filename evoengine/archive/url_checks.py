"""Checks on a database before the store or a reader opens it: a URL that keeps
nothing (in-memory SQLite), a database that must already hold an archive, and the
one-line messages for one that is no archive or cannot be read at all. Shared by the
store (``evo run``, ``resume``, ``export``, ``train``) and the readers (``evo browse``,
``evo report``), so every command says the same."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from evoengine.errors import first_line

ARCHIVE_TABLES = ("runs", "programs", "evaluations", "mutation_calls")


def in_memory_sqlite(url: str) -> bool:
    """Whether ``url`` is SQLite in memory (``sqlite://``, ``sqlite:///:memory:``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # create_engine says what is wrong with it
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def not_an_archive(target: str, tables: Iterable[str]) -> str | None:
    """The message for a database whose ``tables`` lack an archive's; None if complete."""
    present = set(tables)
    missing = [name for name in ARCHIVE_TABLES if name not in present]
    if not missing:
        return None
    return (f"{target} is not an evoengine archive (no table {missing[0]!r}); give the "
            "folder of a run started with `evo run` (see runs/)")


def unreadable(target: str, exc: DatabaseError) -> str:
    """The message for a database that cannot be read: one that cannot be reached
    (OperationalError: a server down, a file that cannot be opened), or a file that is
    damaged or no database at all."""
    reason = f"{target} cannot be read as an archive ({first_line(exc.orig or exc)})"
    if isinstance(exc, OperationalError):
        return f"{reason}; check the path or URL, and that the server is running"
    return (f"{reason}: the file is damaged or not a database; give another run folder "
            "or db.url (a damaged run may be restored from a copy)")


def no_archive_reason(url: str) -> str | None:
    """Why the database at ``url`` holds no archive, or None when it does or cannot be
    asked (a server down, a driver missing: the store's own engine then says what is
    wrong). Read by an engine of its own, without the store's pragmas: WAL mode would
    write to the file."""
    try:
        probe = create_engine(url)
    except (ArgumentError, ModuleNotFoundError):
        return None
    try:
        tables = inspect(probe).get_table_names()
    except OperationalError:
        return None
    except DatabaseError as exc:
        return unreadable(hidden_password(url), exc)
    finally:
        probe.dispose()
    return not_an_archive(hidden_password(url), tables)


def missing_driver(url: str, exc: ModuleNotFoundError, subject: str | None = None) -> str:
    """The message for a URL whose database driver is not installed; ``subject`` names
    it (default: the URL without its password)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        backend = ""
    fix = ("pip install 'evoengine[postgres]' (psycopg)" if backend == "postgresql"
           else f"install the Python package that provides {exc.name}")
    return (f"{subject or hidden_password(url)} needs the database driver {exc.name}, which is not "
            f"installed: {fix}, or name an installed driver in the URL "
            "(dialect+driver://...)")


def hidden_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
