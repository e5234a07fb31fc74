"""The reads behind ``evo browse`` (and the report's shared ones), in SQL.

Nothing here loads every program: tables are read a page at a time (LIMIT/OFFSET on an
indexed order), the grid and the best-score curve are aggregated by the database, and
code is read only for the one program on screen (and its parent, for the diff). This is
what keeps a 100k-program archive quick to open. No Textual import: the report uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, case, func, or_, select
from sqlalchemy.orm import aliased

from evoengine.archive.models import Evaluation, Program, Run
from evoengine.archive.records import COPY_OPERATORS, cell_from_text
from evoengine.tui.filters import parse_filter

#: sortable program-table columns -> programs column
SORT_COLUMNS: dict[str, Any] = {
    "id": Program.id, "score": Program.score, "validation": Program.validation_score,
    "island": Program.island, "cell": Program.cell, "generation": Program.generation,
    "operator": Program.operator, "model": Program.model, "error": Program.error,
}
_EVALUATED = Program.operator.notin_(COPY_OPERATORS)  # copies are stored, not evaluated


@dataclass
class RunSummary:
    id: int
    name: str
    problem: str
    status: str
    evaluations: int
    programs: int
    best_score: float | None
    cost: float
    elapsed_s: float
    config: dict[str, Any]


@dataclass
class ProgramRow:
    """A program-table row: everything but the code and the long texts."""

    id: int
    island: int
    cell: str | None
    generation: int
    operator: str
    model: str
    valid: bool
    score: float | None
    validation_score: float | None
    error: str | None
    parent_id: int | None


@dataclass
class EvaluationRow:
    split: str
    valid: bool
    score: float | None
    error: str | None
    metrics: dict[str, Any]
    feedback: str
    wall_s: float
    cpu_s: float
    stage: int


@dataclass
class ProgramDetail(ProgramRow):
    run_id: int = 0
    step: int | None = None
    second_parent_id: int | None = None
    code: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    evaluations: list[EvaluationRow] = field(default_factory=list)


@dataclass
class Elite:
    """The best program of one grid cell of one island (ties: the older one)."""

    cell: tuple[int, ...]
    program_id: int
    score: float


_ROW_COLUMNS = (Program.id, Program.island, Program.cell, Program.generation,
                Program.operator, Program.model, Program.valid, Program.score,
                Program.validation_score, Program.error, Program.parent_id)


class ArchiveReader:
    """Read-only queries on one archive database (any number of runs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- runs -------------------------------------------------------------------------
    def runs(self) -> list[RunSummary]:
        """Every run with its counts and best score, aggregated in one pass."""
        per_run = (select(Program.run_id,
                          func.count(Program.id).label("programs"),
                          func.sum(case((_EVALUATED, 1), else_=0)).label("evaluations"),
                          func.max(case((Program.valid, Program.score))).label("best"))
                   .group_by(Program.run_id).subquery())
        query = (select(Run.id, Run.name, Run.problem, Run.status, Run.cost, Run.elapsed_s,
                        Run.config, per_run.c.programs, per_run.c.evaluations,
                        per_run.c.best)
                 .outerjoin(per_run, per_run.c.run_id == Run.id).order_by(Run.id))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [RunSummary(id=r.id, name=r.name, problem=r.problem, status=r.status,
                           evaluations=int(r.evaluations or 0), programs=int(r.programs or 0),
                           best_score=r.best, cost=float(r.cost or 0.0),
                           elapsed_s=float(r.elapsed_s or 0.0), config=r.config or {})
                for r in rows]

    def run(self, run_id: int) -> RunSummary:
        return next(r for r in self.runs() if r.id == run_id)

    def change_marker(self) -> tuple[Any, ...]:
        """Cheap values that change whenever anything is written (for live refresh)."""
        with self.engine.connect() as conn:
            return (conn.execute(select(func.max(Program.id))).scalar(),
                    conn.execute(select(func.max(Evaluation.id))).scalar(),
                    tuple(conn.execute(select(Run.id, Run.status, Run.elapsed_s)).all()))

    # --- programs ---------------------------------------------------------------------
    def count_programs(self, run_id: int, filter_text: str = "") -> int:
        query = select(func.count(Program.id)).where(Program.run_id == run_id,
                                                     parse_filter(filter_text))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def programs_page(self, run_id: int, *, filter_text: str = "", sort: str = "score",
                      descending: bool = True, limit: int = 100,
                      offset: int = 0) -> list[ProgramRow]:
        """One page of the program table; missing values sort last either way."""
        column = SORT_COLUMNS[sort]
        ordered = column.desc() if descending else column.asc()
        query = (select(*_ROW_COLUMNS)
                 .where(Program.run_id == run_id, parse_filter(filter_text))
                 .order_by(case((column.is_(None), 1), else_=0), ordered, Program.id.asc())
                 .limit(limit).offset(offset))
        with self.engine.connect() as conn:
            return [ProgramRow(**row._mapping) for row in conn.execute(query)]

    def program(self, program_id: int) -> ProgramDetail | None:
        """One program with its code and its evaluation on every split."""
        with self.engine.connect() as conn:
            row = conn.execute(select(Program.__table__)
                               .where(Program.id == program_id)).first()
            if row is None:
                return None
            evaluations = conn.execute(
                select(Evaluation.split, Evaluation.valid, Evaluation.score, Evaluation.error,
                       Evaluation.metrics, Evaluation.feedback, Evaluation.wall_s,
                       Evaluation.cpu_s, Evaluation.stage)
                .where(Evaluation.program_id == program_id).order_by(Evaluation.id)).all()
        values = dict(row._mapping)
        for unused in ("created_at", "code_hash"):
            values.pop(unused, None)
        detail = ProgramDetail(**values)
        detail.metrics = detail.metrics or {}
        detail.features = detail.features or {}
        detail.evaluations = [EvaluationRow(**e._mapping) for e in evaluations]
        return detail

    def best_program_id(self, run_id: int) -> int | None:
        query = (select(Program.id).where(Program.run_id == run_id, Program.valid,
                                          Program.score.isnot(None))
                 .order_by(Program.score.desc(), Program.id).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def ancestors(self, program_id: int, limit: int = 500) -> list[ProgramRow]:
        """The program's first-parent line, oldest first, ending with the program."""
        chain = (select(Program.id, Program.parent_id, func.cast(0, Program.id.type)
                        .label("depth"))
                 .where(Program.id == program_id).cte("chain", recursive=True))
        parent = aliased(Program)
        chain = chain.union_all(
            select(parent.id, parent.parent_id, (chain.c.depth + 1).label("depth"))
            .join(chain, parent.id == chain.c.parent_id).where(chain.c.depth < limit))
        query = (select(*_ROW_COLUMNS).join(chain, chain.c.id == Program.id)
                 .order_by(chain.c.depth.desc()))
        with self.engine.connect() as conn:
            return [ProgramRow(**row._mapping) for row in conn.execute(query)]

    def children(self, program_id: int, limit: int = 200) -> list[ProgramRow]:
        """Programs made from this one (as first or second parent), oldest first."""
        query = (select(*_ROW_COLUMNS)
                 .where(or_(Program.parent_id == program_id,
                            Program.second_parent_id == program_id))
                 .order_by(Program.id).limit(limit))
        with self.engine.connect() as conn:
            return [ProgramRow(**row._mapping) for row in conn.execute(query)]

    # --- grid and curve ---------------------------------------------------------------
    def islands(self, run_id: int) -> list[int]:
        query = select(Program.island).where(Program.run_id == run_id).distinct()
        with self.engine.connect() as conn:
            return sorted(int(i) for i in conn.execute(query).scalars())

    def elites(self, run_id: int, island: int) -> list[Elite]:
        """Each occupied cell's elite on ``island``, ranked in SQL by a window function."""
        rank = func.row_number().over(partition_by=Program.cell,
                                      order_by=(Program.score.desc(), Program.id.asc()))
        ranked = (select(Program.cell, Program.id, Program.score, rank.label("rank"))
                  .where(Program.run_id == run_id, Program.island == island, Program.valid,
                         Program.score.isnot(None), Program.cell.isnot(None))
                  .subquery())
        query = select(ranked.c.cell, ranked.c.id, ranked.c.score).where(ranked.c.rank == 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Elite(cell, int(pid), float(score))
                for cell, pid, score in ((_grid_cell(text), pid, score)
                                         for text, pid, score in rows) if cell is not None]

    def best_curve(self, run_id: int, width: int = 120) -> tuple[int, list[float | None]]:
        """(evaluations, best score so far at up to ``width`` evenly spaced points).

        One grouped scan: programs are bucketed by id range (ids grow in the order the
        run stored them), the database returns each bucket's count and best score, and
        the running maximum is taken over at most ``width`` buckets here.
        """
        evaluated = (Program.run_id == run_id, _EVALUATED)
        with self.engine.connect() as conn:
            low, high, total = conn.execute(select(
                func.min(Program.id), func.max(Program.id), func.count(Program.id))
                .where(*evaluated)).one()
            if not total:
                return 0, []
            buckets = max(1, min(width, int(total)))
            bucket = ((Program.id - low) * buckets // (high - low + 1)).label("bucket")
            rows = conn.execute(select(bucket, func.count(Program.id),
                                       func.max(case((Program.valid, Program.score))))
                                .where(*evaluated).group_by(bucket).order_by(bucket)).all()
        curve: list[float | None] = []
        best: float | None = None
        for _, _count, bucket_best in rows:
            if bucket_best is not None and (best is None or bucket_best > best):
                best = float(bucket_best)
            curve.append(best)
        return int(total), curve


def _grid_cell(text: str) -> tuple[int, ...] | None:
    """``records.cell_from_text``, or None for a cell that is not ``i,j`` (a damaged or
    hand-edited row), which the grid leaves out rather than failing the whole view."""
    try:
        return cell_from_text(text)
    except ValueError:
        return None
