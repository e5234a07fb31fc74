"""What the report shows, read from the archive in a few aggregate queries.

Scores (not code) of every evaluated program are read once for the curves; everything
else is grouped by the database. Works the same on a finished run and on one still
writing (it is a snapshot of what was committed when it was read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import aliased

from evoengine.archive.models import MutationCall, Program
from evoengine.archive.records import COPY_OPERATORS
from evoengine.errors import UserError
from evoengine.tui.queries import ArchiveReader, Elite, ProgramRow, RunSummary
from evoengine.tui.render import GridAxes

TOP_PROGRAMS = 15


@dataclass
class SuccessRate:
    """Proposals of one operator or model and what became of them."""

    name: str
    proposals: int
    evaluated: int
    valid: int
    improved: int  # valid and scored above its parent

    @property
    def valid_rate(self) -> float:
        return self.valid / self.proposals if self.proposals else 0.0

    @property
    def improved_rate(self) -> float:
        return self.improved / self.proposals if self.proposals else 0.0


@dataclass
class ReportData:
    run: RunSummary
    read_at: datetime
    axes: GridAxes
    #: every evaluated program in the order stored: (island, score; None if invalid)
    evaluations: list[tuple[int, float | None]] = field(default_factory=list)
    elites: dict[int, list[Elite]] = field(default_factory=dict)
    by_operator: list[SuccessRate] = field(default_factory=list)
    by_model: list[SuccessRate] = field(default_factory=list)
    lineage: list[ProgramRow] = field(default_factory=list)  # the best's, oldest first
    errors: list[tuple[str, int]] = field(default_factory=list)  # program error kinds
    error_by_operator: list[tuple[str, str, int]] = field(default_factory=list)
    outcomes: list[tuple[str, int]] = field(default_factory=list)  # mutation outcomes
    top: list[ProgramRow] = field(default_factory=list)

    @property
    def has_valid(self) -> bool:
        return self.run.best_score is not None


def pick_run(reader: ArchiveReader, name: str | None) -> RunSummary:
    runs = reader.runs()
    if name is not None:
        for run in runs:
            if run.name == name:
                return run
        raise UserError(f"no run named {name!r} here; it holds: "
                        + (", ".join(r.name for r in runs) or "none"))
    if not runs:
        raise UserError("this archive holds no run yet; start one with `evo run`")
    if len(runs) > 1:
        raise UserError("this archive holds several runs (" + ", ".join(r.name for r in runs)
                        + "); name one with --run NAME")
    return runs[0]


def _success(reader: ArchiveReader, run_id: int, column: object) -> list[SuccessRate]:
    parent, child = aliased(Program), aliased(Program)
    applied = MutationCall.outcome == "applied"
    improved = child.valid & (child.score > parent.score)
    query = (select(column, func.count(MutationCall.id),
                    func.sum(case((applied, 1), else_=0)),
                    func.sum(case((applied & child.valid, 1), else_=0)),
                    func.sum(case((applied & improved, 1), else_=0)))
             .join(parent, parent.id == MutationCall.parent_id)
             .outerjoin(child, child.id == MutationCall.program_id)
             .where(MutationCall.run_id == run_id)
             .group_by(column).order_by(func.count(MutationCall.id).desc()))
    with reader.engine.connect() as conn:
        return [SuccessRate(str(name or "?"), int(n), int(e or 0), int(v or 0), int(i or 0))
                for name, n, e, v, i in conn.execute(query)]


def load_report_data(reader: ArchiveReader, run: RunSummary) -> ReportData:
    """Everything the report needs, for one run."""
    data = ReportData(run=run, read_at=datetime.now(timezone.utc),
                      axes=GridAxes.from_config(run.config))
    evaluated = (select(Program.island, Program.valid, Program.score)
                 .where(Program.run_id == run.id, Program.operator.notin_(COPY_OPERATORS))
                 .order_by(Program.id))
    errors = (select(Program.error, func.count()).where(Program.run_id == run.id,
                                                        Program.error.isnot(None))
              .group_by(Program.error).order_by(func.count().desc()))
    error_ops = (select(Program.operator, Program.error, func.count())
                 .where(Program.run_id == run.id, Program.error.isnot(None))
                 .group_by(Program.operator, Program.error)
                 .order_by(Program.operator, func.count().desc()))
    outcomes = (select(MutationCall.outcome, func.count()).where(MutationCall.run_id == run.id)
                .group_by(MutationCall.outcome).order_by(func.count().desc()))
    with reader.engine.connect() as conn:
        for island, valid, score in conn.execution_options(yield_per=10_000).execute(evaluated):
            data.evaluations.append(
                (int(island), float(score) if valid and score is not None else None))
        data.errors = [(str(e), int(n)) for e, n in conn.execute(errors)]
        data.error_by_operator = [(str(o), str(e), int(n)) for o, e, n in conn.execute(error_ops)]
        data.outcomes = [(str(o), int(n)) for o, n in conn.execute(outcomes)]
    for island in reader.islands(run.id):
        data.elites[island] = reader.elites(run.id, island)
    data.by_operator = _success(reader, run.id, MutationCall.operator)
    data.by_model = _success(reader, run.id, MutationCall.model)
    best = reader.best_program_id(run.id)
    if best is not None:
        data.lineage = reader.ancestors(best)
    data.top = reader.programs_page(run.id, filter_text="valid=true", sort="score",
                                    descending=True, limit=TOP_PROGRAMS)
    return data
