"""The archive on PostgreSQL: the same schema (by the same Alembic revisions), safe
writes from several controllers at once, and `evo run` / `evo resume` end to end.

Every test talks to a real PostgreSQL server started on 127.0.0.1 for the session
(``tests/pg_server.py``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from evoengine.archive.models import Base, Evaluation, MutationCall, Program, Run
from evoengine.archive.records import ProgramRecord
from evoengine.archive.schema_migrate import head_revision
from evoengine.archive.store import ArchiveStore, StepRecord, StoreError, make_engine
from evoengine.evaluation.result import EvaluationResult
from tests.test_alembic_migrations import built_by_every_revision, schema_snapshot
from tests.test_llm_run import run_with_unstorable_replies

pytestmark = pytest.mark.postgres

STEPS_PER_WRITER = 60


def run_in_threads(*targets) -> list[BaseException]:
    """Start every target at once (behind a barrier); return what they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def wrapped(target):
        barrier.wait()
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def seed_store(engine, name: str) -> tuple[ArchiveStore, ProgramRecord]:
    store = ArchiveStore.create_run(engine, name, "bin_packing", 0, {"name": name})
    seed = ProgramRecord(island=0, generation=0, operator="initial", model="seed",
                         code=f"# {name}\n", valid=True, score=-10.0)
    store.add_programs([(seed, EvaluationResult(valid=True, score=-10.0))])
    return store, seed


def write_steps(store: ArchiveStore, seed: ProgramRecord, name: str) -> None:
    for step in range(STEPS_PER_WRITER):
        program = ProgramRecord(island=0, generation=1, operator="gp", model="gp",
                                code=f"# {name} {step}\n", valid=True, score=float(step),
                                step=step, parent_id=seed.id, cell=(0, step % 3))
        store.record_step(StepRecord(step=step, parent_id=seed.id, outcome="applied",
                                     child=None, program=program,
                                     evaluation=EvaluationResult(valid=True, score=step)),
                          elapsed_s=float(step), cost=step / 100)


def test_the_schema_on_postgresql_is_the_models_schema(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
            == head_revision()
    engine.dispose()


def test_a_new_postgresql_archive_has_the_schema_every_revision_builds(
        postgres_server) -> None:
    """``create_all`` stamped at the head (what a new archive gets) against Alembic
    running every revision, each on an empty database of its own."""
    quick = make_engine(postgres_server.create_database())
    full = built_by_every_revision(postgres_server.create_database())
    assert schema_snapshot(quick) == schema_snapshot(full)
    quick.dispose()
    full.dispose()


def test_controllers_opening_a_new_database_at_once_migrate_it_once(postgres_url: str
                                                                    ) -> None:
    engines = []
    errors = run_in_threads(*[lambda: engines.append(make_engine(postgres_url))] * 4)
    assert errors == []
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for engine in engines:
        engine.dispose()


def test_two_controllers_write_their_steps_to_one_archive_at_once(postgres_url: str
                                                                 ) -> None:
    """Two runs on two connections pools, writing concurrently: every step lands,
    in its own run, ids stay unique, and each run's progress row is its own."""
    engine_a, engine_b = make_engine(postgres_url), make_engine(postgres_url)
    store_a, seed_a = seed_store(engine_a, "a")
    store_b, seed_b = seed_store(engine_b, "b")
    errors = run_in_threads(lambda: write_steps(store_a, seed_a, "a"),
                            lambda: write_steps(store_b, seed_b, "b"))
    assert errors == []
    with engine_a.connect() as conn:
        for store, name in ((store_a, "a"), (store_b, "b")):
            codes = conn.execute(select(Program.code).where(
                Program.run_id == store.run_id, Program.step.is_not(None))).scalars().all()
            assert sorted(codes) == sorted(f"# {name} {s}\n" for s in range(STEPS_PER_WRITER))
            steps = conn.execute(select(MutationCall.step).where(
                MutationCall.run_id == store.run_id).order_by(MutationCall.step)).scalars()
            assert list(steps) == list(range(STEPS_PER_WRITER))
            run = conn.execute(select(Run.elapsed_s, Run.cost).where(
                Run.id == store.run_id)).one()
            assert tuple(run) == (STEPS_PER_WRITER - 1.0, (STEPS_PER_WRITER - 1) / 100)
        total = conn.execute(select(func.count(Evaluation.id))).scalar()
        assert total == 2 * (STEPS_PER_WRITER + 1)
    assert store_a.last_step() == store_b.last_step() == STEPS_PER_WRITER - 1
    engine_a.dispose()
    engine_b.dispose()


def test_a_run_name_is_taken_once_even_when_claimed_at_the_same_moment(
        postgres_url: str) -> None:
    engines = [make_engine(postgres_url) for _ in range(4)]
    won: list[ArchiveStore] = []
    errors = run_in_threads(*[
        (lambda e=e: won.append(ArchiveStore.create_run(e, "same", "bin_packing", 0, {})))
        for e in engines])
    assert len(won) == 1
    assert len(errors) == 3 and all(isinstance(e, StoreError) for e in errors)
    assert all("already exists" in str(e) for e in errors)
    with engines[0].connect() as conn:
        assert conn.execute(select(func.count(Run.id))).scalar() == 1
    for engine in engines:
        engine.dispose()


def test_progress_of_a_run_never_goes_back_when_two_writers_update_it(
        postgres_url: str) -> None:
    """Progress writes racing on one run row: the row ends at the newest values,
    not at whichever older write happened to commit last."""
    engine_a, engine_b = make_engine(postgres_url), make_engine(postgres_url)
    store_a, seed = seed_store(engine_a, "shared")
    store_b = ArchiveStore(engine_b, store_a.run_id)

    def writer(store: ArchiveStore, offset: int) -> None:
        for i in range(80):
            value = float(2 * i + offset)  # a: even, b: odd values; the max is 159
            store.record_step(StepRecord(step=2 * i + offset, parent_id=seed.id,
                                         outcome="noop", child=None),
                              elapsed_s=value, cost=value)

    assert run_in_threads(lambda: writer(store_a, 0), lambda: writer(store_b, 1)) == []
    with engine_a.connect() as conn:
        assert tuple(conn.execute(select(Run.elapsed_s, Run.cost)).one()) == (159.0, 159.0)
        assert conn.execute(select(func.count(MutationCall.id))).scalar() == 160
    engine_a.dispose()
    engine_b.dispose()


def test_an_unreachable_server_is_one_line_saying_what_to_check(run_evo) -> None:
    url = "postgresql+psycopg://evo@127.0.0.1:1/none"
    result = run_evo("run", "problem=bin_packing_quick", "llm=gp", "db=postgres",
                     f"db.url={url}", "search.max_evaluations=2", "ui=none")
    assert result.returncode == 2
    assert "evo: error: cannot open the archive database" in result.stderr
    assert "check db.url" in result.stderr


@pytest.mark.slow
def test_evo_run_and_resume_on_postgresql(run_evo, postgres_url: str, tmp_path: Path
                                         ) -> None:
    common = ["ui=plain", "sandbox=process", "search.num_islands=2"]
    # the test server trusts loopback and ignores the password; it must not be printed
    with_password = make_url(postgres_url).set(password="s3cret-pw").render_as_string(
        hide_password=False)
    first = run_evo("run", "problem=bin_packing", "llm=gp", "db=postgres",
                    f"db.url={with_password}", "name=pg-run", "search.max_evaluations=15",
                    *common)
    assert first.returncode == 0, first.stderr
    assert "s3cret-pw" not in first.stdout + first.stderr
    assert "postgresql+psycopg://" in first.stdout  # the archive's place, password hidden
    run_dir = tmp_path / "runs" / "pg-run"
    assert not (run_dir / "archive.db").exists()  # the archive is on the server
    assert (run_dir / "best_program.py").is_file()
    # the same name again on the same server is refused, and the folder is kept
    again = run_evo("run", "problem=bin_packing", "llm=gp", "db=postgres",
                    f"db.url={postgres_url}", "name=pg-run", *common)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "name: pg-run" in (run_dir / "config.yaml").read_text()
    # the password is kept nowhere: resuming from the folder connects without one
    assert "s3cret-pw" not in (run_dir / "config.yaml").read_text()
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert "s3cret-pw" not in str(conn.execute(select(Run.config)).scalar())

    resumed = run_evo("resume", str(run_dir), "search.max_evaluations=30", "ui=plain")
    assert resumed.returncode == 0, resumed.stderr
    with engine.connect() as conn:
        train = conn.execute(select(func.count(Evaluation.id)).where(
            Evaluation.split == "train")).scalar()
        assert train == 30
        steps = conn.execute(select(MutationCall.step).order_by(MutationCall.id)).scalars()
        steps = list(steps)
        assert len(steps) == len(set(steps))  # no step repeated across the resume
        status = conn.execute(select(Run.status)).scalar()
        assert status == "finished"
    # resuming by URL finds the same run
    by_url = run_evo("resume", postgres_url, "search.max_evaluations=35", "ui=plain")
    assert by_url.returncode == 0, by_url.stderr
    with engine.connect() as conn:
        assert conn.execute(select(func.count(Evaluation.id)).where(
            Evaluation.split == "train")).scalar() == 35
    engine.dispose()


def test_a_run_on_postgresql_is_locked_across_connections(postgres_url: str) -> None:
    """The lock of a run on a server is the server's (an advisory lock), so controllers
    on different machines exclude each other too."""
    from evoengine.archive.run_lock import RunLock

    first_engine, second_engine = make_engine(postgres_url), make_engine(postgres_url)
    store, _ = seed_store(first_engine, "locked")
    held = RunLock.acquire(first_engine, store.run_id, "locked")
    with pytest.raises(StoreError, match="being driven by another `evo` process"):
        RunLock.acquire(second_engine, store.run_id, "locked")
    other, _ = seed_store(second_engine, "other")
    RunLock.acquire(second_engine, other.run_id, "other").release()  # one lock per run
    held.release()  # back in the pool, the connection no longer holds it
    RunLock.acquire(second_engine, store.run_id, "locked").release()
    first_engine.dispose()
    second_engine.dispose()


def test_a_nul_from_a_candidate_or_a_model_does_not_stop_a_run_on_postgresql(
        run_evo, postgres_url: str) -> None:
    run_with_unstorable_replies(run_evo, "db=postgres", f"db.url={postgres_url}")
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        feedback = conn.execute(select(Program.feedback).where(
            Program.error == "crash")).scalars().all()
    engine.dispose()
    assert feedback and all("bad \ufffd value" in text for text in feedback)


def test_generated_run_names_move_on_past_ones_taken_on_a_shared_server(
        postgres_url: str, tmp_path: Path) -> None:
    """Runs started in the same second on other machines (a job array against one
    server) took `<problem>-<date>-<time>` first; the next one stopped with "already
    exists". A generated name now moves on to `...-2`, as it does for local folders."""
    from datetime import datetime, timedelta

    from evoengine.config.compose import load_run_config
    from evoengine.controller.setup import start_run

    config, _ = load_run_config(["problem=bin_packing_quick", "llm=gp", "ui=none",
                                 f"db.url={postgres_url}", f"runs_dir={tmp_path}"])
    engine = make_engine(postgres_url)
    now = datetime.now()
    elsewhere = [f"{config.problem.name}-{now + timedelta(seconds=s):%Y%m%d-%H%M%S}"
                 for s in range(60)]  # as other machines named theirs, this minute
    for name in elsewhere:
        ArchiveStore.create_run(engine, name, config.problem.name, 0, {})
    context = start_run(config)
    try:
        assert config.name in {f"{name}-2" for name in elsewhere}
        assert [p.name for p in tmp_path.iterdir()] == [config.name]  # no folder left over
        with engine.connect() as conn:
            assert conn.execute(select(func.count(Run.id))).scalar() == 61
    finally:
        assert context.lock is not None
        context.lock.release()
        context.store.engine.dispose()
        engine.dispose()
