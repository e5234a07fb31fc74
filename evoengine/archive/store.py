"""The archive's database: connection set-up and the writes of the ask/tell loop.

Each step is written in one transaction (mutation call, program, evaluation), so a
run killed at any moment either has the whole step or none of it. The hot path uses
SQLAlchemy Core inserts: the ORM's unit of work costs more than the rest of a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, case, create_engine, event, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import aliased

from evoengine.archive.models import (
    Evaluation,
    LLMCall,
    MutationCall,
    Program,
    Run,
    utcnow,
)
from evoengine.archive.records import ProgramRecord, cell_from_text, cell_to_text
from evoengine.archive.schema_migrate import migrate
from evoengine.archive.url_checks import (
    hidden_password,
    in_memory_sqlite,
    missing_driver,
    no_archive_reason,
    unreadable,
)
from evoengine.errors import first_line
from evoengine.evaluation.result import EvaluationResult
from evoengine.mutation.types import Child


class StoreError(RuntimeError):
    """The archive database cannot be used as asked; the message says why."""


class RunNameTaken(StoreError):
    """The database already holds a run of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a run named {name!r} already exists in this database; use "
                         "`evo resume` or pick another name=")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def make_engine(url: str, echo: bool = False, existing: bool = False) -> Engine:
    """Create the engine and bring the schema up to date (Alembic, see
    ``schema_migrate``); SQLite gets WAL mode, NORMAL sync and foreign keys.
    PostgreSQL connections are checked before use (``pool_pre_ping``): a database
    restart during a long run costs a reconnect, not the run.

    ``existing``: the database must already hold an archive (``evo resume``, ``evo
    export``): one without is refused before anything is written to it, rather than
    given an empty schema. StoreError, one line, for a URL that names no file a run
    can keep (in-memory SQLite) and for a file that is no database."""
    if in_memory_sqlite(url):
        raise StoreError(f"db.url {url!r} is an in-memory database: the run would be gone "
                         "when evo exits; give a file (sqlite:///path/archive.db) or leave "
                         "db.url unset")
    missing = existing and no_archive_reason(url)
    if missing:
        raise StoreError(missing)
    try:
        if url.startswith("postgresql"):
            engine = create_engine(url, echo=echo, pool_pre_ping=True)
        else:
            engine = create_engine(url, echo=echo)
    except ModuleNotFoundError as exc:
        raise StoreError(missing_driver(url, exc, "db.url")) from exc
    except ArgumentError as exc:
        raise StoreError(f"db.url {url!r} is not a database URL ({exc}); e.g. "
                         "postgresql+psycopg://user:password@host:5432/dbname") from exc
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable against process kills
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = first_line(exc.orig or exc)
        raise StoreError(f"cannot open the archive database "
                         f"{engine.url.render_as_string(hide_password=True)}: {reason}; "
                         "check db.url and that the server is running") from exc
    except DatabaseError as exc:  # a damaged file, or one that is no database at all
        engine.dispose()
        raise StoreError(unreadable(hidden_password(url), exc)) from exc
    return engine


@dataclass
class StepRecord:
    """Everything one step writes: the proposal, and the program if one was made."""

    step: int
    parent_id: int
    outcome: str  # applied | noop | duplicate | rejected
    child: Child | None
    program: ProgramRecord | None = None
    evaluation: EvaluationResult | None = None


_PROGRAMS = Program.__table__
_EVALUATIONS = Evaluation.__table__
_MUTATION_CALLS = MutationCall.__table__
_RUNS = Run.__table__
_LLM_CALLS = LLMCall.__table__
# Built once: values travel as bound parameters, so SQLAlchemy compiles each once.
_INSERT_PROGRAM = insert(_PROGRAMS)
_INSERT_EVALUATION = insert(_EVALUATIONS)
_INSERT_MUTATION_CALL = insert(_MUTATION_CALLS)
_INSERT_LLM_CALL = insert(_LLM_CALLS)
# Progress only moves forward: with two writers on one run row (PostgreSQL re-reads a
# row it waited for), a late, older update cannot take back a newer one.
_UPDATE_RUN_PROGRESS = update(_RUNS).where(_RUNS.c.id == bindparam("run_id_")).values(
    elapsed_s=case((_RUNS.c.elapsed_s > bindparam("elapsed_s"), _RUNS.c.elapsed_s),
                   else_=bindparam("elapsed_s")),
    cost=case((_RUNS.c.cost > bindparam("cost"), _RUNS.c.cost), else_=bindparam("cost")))


class ArchiveStore:
    """Reads and writes one run's rows."""

    def __init__(self, engine: Engine, run_id: int) -> None:
        self.engine = engine
        self.run_id = run_id

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction. A database that cannot take it (a full disk, a server
        gone away) is a StoreError saying what to do: every step stored before it is
        kept, and `evo resume` goes on from there."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(f"cannot write to the archive ({first_line(exc.orig or exc)}); "
                             "what was stored before is kept: make room or bring the "
                             "database back, then continue with `evo resume`") from exc

    # --- runs -------------------------------------------------------------------------
    @classmethod
    def create_run(cls, engine: Engine, name: str, problem: str, seed: int,
                   config: dict[str, Any]) -> ArchiveStore:
        with engine.begin() as conn:
            existing = conn.execute(select(Run.id).where(Run.name == name)).first()
            if existing is not None:
                raise RunNameTaken(name)
            try:  # another controller may take the name between the check and here
                result = conn.execute(insert(Run).values(
                    name=name, problem=problem, seed=seed, config=config, status="running"))
            except IntegrityError as exc:
                raise RunNameTaken(name) from exc
            return cls(engine, int(result.inserted_primary_key[0]))

    @classmethod
    def open_run(cls, engine: Engine, name: str | None = None) -> tuple[ArchiveStore, Run]:
        """Open an existing run (the only one in the database when ``name`` is None)."""
        with engine.connect() as conn:
            query = select(Run)
            if name is not None:
                query = query.where(Run.name == name)
            rows = conn.execute(query.order_by(Run.id)).all()
        if not rows:
            raise StoreError("no run found in this database" if name is None
                             else f"no run named {name!r} in this database")
        if len(rows) > 1 and name is None:
            raise StoreError("this database holds several runs; name one with name=")
        run = Run(**rows[-1]._mapping)
        return cls(engine, run.id), run

    def set_status(self, status: str, elapsed_s: float, cost: float) -> None:
        with self._writing() as conn:
            conn.execute(update(Run).where(Run.id == self.run_id).values(
                status=status, elapsed_s=elapsed_s, cost=cost, updated_at=utcnow()))

    def set_config(self, config: dict[str, Any]) -> None:
        with self._writing() as conn:
            conn.execute(update(Run).where(Run.id == self.run_id).values(config=config))

    # --- writes -----------------------------------------------------------------------
    def add_programs(self, programs: list[tuple[ProgramRecord, EvaluationResult | None]]
                     ) -> None:
        """Store programs no mutation call produced (the seed and its copies, migrated
        elites) in one transaction; sets each ``program.id``."""
        with self._writing() as conn:
            for program, evaluation in programs:
                self._insert_program(conn, program, evaluation, "train")

    def record_step(self, record: StepRecord, elapsed_s: float, cost: float) -> None:
        """Write one step atomically; sets ``record.program.id``."""
        with self._writing() as conn:
            program_id = None
            if record.program is not None:
                program_id = self._insert_program(conn, record.program, record.evaluation,
                                                  "train")
            child = record.child
            conn.execute(_INSERT_MUTATION_CALL, dict(
                run_id=self.run_id, step=record.step, parent_id=record.parent_id,
                program_id=program_id, outcome=record.outcome,
                operator=child.operator if child else "", model=child.model if child else "",
                adapter=child.adapter if child else None,
                edit=child.edit if child else "", prompt=child.prompt if child else "",
                response=child.response if child else "",
                prompt_tokens=child.prompt_tokens if child else 0,
                completion_tokens=child.completion_tokens if child else 0,
                cost=child.cost if child else 0.0, latency_s=child.latency_s if child else 0.0,
                created_at=utcnow()))
            conn.execute(_UPDATE_RUN_PROGRESS,
                         dict(run_id_=self.run_id, elapsed_s=elapsed_s, cost=cost))

    def record_llm_call(self, values: dict[str, Any]) -> None:
        """Store one model call at once, in its own transaction (not the step's: a call
        of a step that never finishes is kept too, and superseded by ``session``)."""
        with self._writing() as conn:
            conn.execute(_INSERT_LLM_CALL, dict(values, run_id=self.run_id,
                                                created_at=utcnow()))

    def set_validation_score(self, program_id: int, result: EvaluationResult) -> None:
        with self._writing() as conn:
            self._insert_evaluation(conn, program_id, result, "validation")
            conn.execute(update(Program).where(Program.id == program_id).values(
                validation_score=result.score))

    def _insert_program(self, conn: Connection, program: ProgramRecord,
                        evaluation: EvaluationResult | None, split: str) -> int:
        result = conn.execute(_INSERT_PROGRAM, dict(
            run_id=self.run_id, step=program.step, island=program.island,
            generation=program.generation, parent_id=program.parent_id,
            second_parent_id=program.second_parent_id, operator=program.operator,
            model=program.model, code=program.code, code_hash=program.code_hash,
            valid=program.valid, score=program.score, error=program.error,
            metrics=program.metrics, features=program.features,
            cell=cell_to_text(program.cell), feedback=program.feedback,
            validation_score=program.validation_score, created_at=utcnow()))
        program.id = int(result.inserted_primary_key[0])
        if evaluation is not None:
            self._insert_evaluation(conn, program.id, evaluation, split)
        return program.id

    @staticmethod
    def _insert_evaluation(conn: Connection, program_id: int, result: EvaluationResult,
                           split: str) -> None:
        conn.execute(_INSERT_EVALUATION, dict(
            program_id=program_id, split=split, valid=result.valid, score=result.score,
            error=result.error.value if result.error else None, metrics=result.metrics,
            features=result.features, feedback=result.feedback, wall_s=result.wall_s,
            cpu_s=result.cpu_s, stage=result.stage, created_at=utcnow()))

    # --- reads ------------------------------------------------------------------------
    def iter_programs(self) -> Iterator[ProgramRecord]:
        """Every program of the run in insertion order (for rebuilding the archive)."""
        columns = [Program.id, Program.step, Program.island, Program.generation,
                   Program.parent_id, Program.second_parent_id, Program.operator,
                   Program.model, Program.code, Program.code_hash, Program.valid,
                   Program.score, Program.error, Program.metrics, Program.features,
                   Program.cell, Program.feedback, Program.validation_score]
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=2000).execute(
                select(*columns).where(Program.run_id == self.run_id).order_by(Program.id))
            for row in rows:
                values = dict(row._mapping)
                values["cell"] = cell_from_text(values["cell"])
                yield ProgramRecord(**values)

    def iter_model_calls(self) -> Iterator[tuple[str, float | None, float | None, float, str]]:
        """``(model, parent score, child score, cost, outcome)`` of every mutation call, in
        the order they were written (the order the controller told them), for rebuilding
        an ensemble's bandit on resume. The child score is None unless the child was
        evaluated (outcome ``applied``) and is valid."""
        parent, child = aliased(Program), aliased(Program)
        query = (select(MutationCall.model, parent.score, child.score, child.valid,
                        MutationCall.cost, MutationCall.outcome)
                 .join(parent, parent.id == MutationCall.parent_id)
                 .outerjoin(child, child.id == MutationCall.program_id)
                 .where(MutationCall.run_id == self.run_id).order_by(MutationCall.id))
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=5000).execute(query)
            for model, parent_score, child_score, valid, cost, outcome in rows:
                evaluated = outcome == "applied" and bool(valid)
                yield (model, parent_score, child_score if evaluated else None,
                       float(cost or 0.0), outcome)

    def last_step(self) -> int:
        """The highest step recorded (by a program or a mutation call); -1 if none."""
        with self.engine.connect() as conn:
            a = conn.execute(select(func.max(MutationCall.step)).where(
                MutationCall.run_id == self.run_id)).scalar()
        return -1 if a is None else int(a)

    def grid_facts(self) -> tuple[int, dict[str, Any] | None]:
        """How many islands hold programs, and the features the scorer reported for
        the first valid program (None if none is valid): what a resume's grid must fit."""
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(Program.island)).where(
                Program.run_id == self.run_id)).scalar()
            features = conn.execute(select(Program.features).where(
                Program.run_id == self.run_id, Program.valid.is_(True)
            ).order_by(Program.id).limit(1)).scalar()
        return (0 if top is None else int(top) + 1), features

    def next_llm_session(self) -> int:
        """The ``llm_calls.session`` of a run (0) or of its next resume (one more)."""
        with self.engine.connect() as conn:
            last = conn.execute(select(func.max(LLMCall.session)).where(
                LLMCall.run_id == self.run_id)).scalar()
        return 0 if last is None else int(last) + 1

    def last_llm_call_step(self) -> int | None:
        """The highest step a recorded model call belongs to; None if none does."""
        with self.engine.connect() as conn:
            last = conn.execute(select(func.max(LLMCall.step)).where(
                LLMCall.run_id == self.run_id)).scalar()
        return None if last is None else int(last)

    def llm_calls(self, request_hash: str) -> list[dict[str, Any]]:
        """The recorded calls of one request, in the order they were made."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_LLM_CALLS).where(
                LLMCall.run_id == self.run_id, LLMCall.request_hash == request_hash
            ).order_by(LLMCall.id)).all()
        return [dict(row._mapping) for row in rows]

    def count_evaluations(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(func.count(Evaluation.id)).join(Program).where(
                    Program.run_id == self.run_id, Evaluation.split == "train")).scalar() or 0)
