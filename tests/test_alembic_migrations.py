"""The archive schema is made and migrated by the packaged Alembic revisions, and an
archive made before Alembic (by ``create_all``) is adopted with its data intact."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect

from evoengine.archive.models import Base, MutationCall, Program, Run
from evoengine.archive.records import ProgramRecord
from evoengine.archive.schema_migrate import (
    HEAD_REVISION,
    SchemaError,
    alembic_config,
    head_revision,
)
from evoengine.archive.store import ArchiveStore, StepRecord, make_engine, sqlite_url
from tests.conftest import archive_rows


def schema_differences(engine) -> list:
    """What Alembic's autogenerate would change to match the models (empty: none)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def make_pre_alembic_archive(path: Path, drop_adapter: bool = False) -> None:
    """An archive as evoengine wrote it before Alembic: ``create_all`` of the models,
    one run with a program and a mutation call (optionally without ``adapter``, as
    archives made before that column was added)."""
    engine = create_engine(sqlite_url(path))
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Run).values(id=1, name="old", problem="bin_packing", seed=3,
                                        config={"seed": 3}, status="interrupted",
                                        elapsed_s=12.5, cost=0.0))
        conn.execute(insert(Program).values(
            id=1, run_id=1, step=None, island=0, generation=0, operator="initial",
            model="seed", code="x = 1\n", code_hash="h1", valid=True, score=-3.0,
            metrics={}, features={"code_length": 6.0}, cell="0,0", feedback=""))
        conn.execute(insert(MutationCall).values(
            run_id=1, step=0, parent_id=1, program_id=None, outcome="noop", operator="gp",
            model="gp", edit="", prompt="", response="", prompt_tokens=0,
            completion_tokens=0, cost=0.0, latency_s=0.0))
    engine.dispose()
    if drop_adapter:
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE mutation_calls DROP COLUMN adapter")


def test_a_new_archive_gets_the_models_schema_at_the_head_revision(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "archive.db"))
    assert schema_differences(engine) == []
    assert archive_rows(tmp_path / "archive.db", "SELECT version_num FROM alembic_version") \
        == [(head_revision(),)]
    engine.dispose()


@pytest.mark.parametrize("drop_adapter", [False, True], ids=["current", "before-adapter"])
def test_an_archive_made_before_alembic_is_adopted_with_its_data(
        tmp_path: Path, drop_adapter: bool) -> None:
    path = tmp_path / "archive.db"
    make_pre_alembic_archive(path, drop_adapter=drop_adapter)
    engine = make_engine(sqlite_url(path))
    assert schema_differences(engine) == []
    assert archive_rows(path, "SELECT version_num FROM alembic_version") \
        == [(head_revision(),)]
    store, run = ArchiveStore.open_run(engine)
    assert (run.name, run.elapsed_s) == ("old", 12.5)
    assert [p.code for p in store.iter_programs()] == ["x = 1\n"]
    assert store.last_step() == 0
    # ... and the adopted archive takes new steps, adapter column included
    child_program = ProgramRecord(island=0, generation=1, operator="gp", model="gp",
                                  code="x = 2\n", valid=True, score=-2.0, step=1,
                                  parent_id=1, cell=(0, 0))
    store.record_step(StepRecord(step=1, parent_id=1, outcome="applied", child=None,
                                 program=child_program), elapsed_s=13.0, cost=0.0)
    assert store.last_step() == 1
    assert archive_rows(path, "SELECT count(*), count(adapter) FROM mutation_calls") \
        == [(2, 0)]
    engine.dispose()
    # opening it again is a no-op: same revision, same rows
    make_engine(sqlite_url(path)).dispose()
    assert archive_rows(path, "SELECT count(*) FROM programs") == [(2,)]


def test_an_archive_from_a_newer_evoengine_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "archive.db"
    make_engine(sqlite_url(path)).dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(SchemaError, match="newer version"):
        make_engine(sqlite_url(path))
    assert archive_rows(path, "SELECT version_num FROM alembic_version") \
        == [("9999_future",)]


def test_a_database_with_only_some_archive_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("INSERT INTO runs (note) VALUES ('not ours')")
    with pytest.raises(SchemaError, match="not an evoengine archive"):
        make_engine(sqlite_url(path))
    assert archive_rows(path, "SELECT note FROM runs") == [("not ours",)]


def schema_snapshot(engine) -> dict:
    """Every table's columns, keys, indexes and constraints, as the database reports them."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        return {table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                        for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                                    tuple(fk["referred_columns"]))
                                   for fk in inspector.get_foreign_keys(table)),
            "indexes": sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                              for ix in inspector.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"])
                             for u in inspector.get_unique_constraints(table)),
        } for table in sorted(inspector.get_table_names())}


def built_by_every_revision(url: str):
    """An engine on the empty database at ``url`` after Alembic ran every revision."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    return engine


def test_the_head_revision_constant_is_the_head_of_the_revision_scripts() -> None:
    assert head_revision() == HEAD_REVISION, \
        "a new revision was added: set schema_migrate.HEAD_REVISION to it"


def test_a_new_archive_has_the_schema_that_every_revision_builds(tmp_path: Path) -> None:
    quick = make_engine(sqlite_url(tmp_path / "archive.db"))  # create_all, stamped
    full = built_by_every_revision(sqlite_url(tmp_path / "revisions.db"))
    assert schema_snapshot(quick) == schema_snapshot(full)
    with sqlite3.connect(tmp_path / "archive.db") as a, \
            sqlite3.connect(tmp_path / "revisions.db") as b:
        ddl = "SELECT type, name, sql FROM sqlite_master ORDER BY name"  # the very DDL
        assert a.execute(ddl).fetchall() == b.execute(ddl).fetchall()
    quick.dispose()
    full.dispose()


def test_opening_a_new_or_current_archive_does_not_import_alembic(tmp_path: Path) -> None:
    """Alembic is about 0.1 s of every start; only an archive that needs it loads it."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from evoengine.archive.store import make_engine, sqlite_url\n"
            f"url = sqlite_url(Path({str(tmp_path / 'archive.db')!r}))\n"
            "make_engine(url).dispose()\n"  # new
            "make_engine(url).dispose()\n"  # at the head
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert archive_rows(tmp_path / "archive.db", "SELECT version_num FROM alembic_version") \
        == [(HEAD_REVISION,)]
