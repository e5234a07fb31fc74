"""The archive database refusing a write (here SQLite at its size limit, as on a full
disk; a PostgreSQL server gone away is the same error class): one StoreError that says
what to do, with every earlier step kept. `evo run` used to end in a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from evoengine.archive.records import ProgramRecord
from evoengine.archive.store import ArchiveStore, StepRecord, StoreError, make_engine, sqlite_url
from evoengine.mutation.types import Child


def test_a_full_database_is_a_store_error_and_keeps_the_steps_before(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "archive.db"))
    store = ArchiveStore.create_run(engine, "full", "p", 0, {})
    seed = ProgramRecord(island=0, generation=0, operator="initial", model="seed",
                         code="x = 1\n", valid=True, score=1.0)
    store.add_programs([(seed, None)])
    limit: list[int] = []

    @event.listens_for(engine, "connect")
    def _cap(dbapi_connection, _record) -> None:  # what a full disk does to SQLite
        if limit:
            dbapi_connection.execute(f"PRAGMA max_page_count={limit[0]}")

    engine.dispose()  # new connections get the cap
    pages = engine.raw_connection().execute("PRAGMA page_count").fetchone()[0]
    limit.append(pages + 8)
    engine.dispose()
    stored = 0
    with pytest.raises(StoreError) as full:
        for step in range(1000):
            store.record_step(StepRecord(step, seed.id, "noop", Child(
                code="", operator="llm:diff", model="m", prompt="p" * 2000)), 0.0, 0.0)
            stored += 1
    message = str(full.value)
    assert message.startswith("cannot write to the archive (database or disk is full); ")
    assert "`evo resume`" in message and "\n" not in message
    assert 0 < stored == store.last_step() + 1  # every step before the refusal is there
    engine.dispose()
