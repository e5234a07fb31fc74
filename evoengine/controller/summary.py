"""The end of a run: validation scores of the best programs, and what to print.

The search sees only the train split (every evaluation of the loop is a train
evaluation; parents and prompts carry train scores and feedback only). Here, after
the search, the ``search.validate_top`` best distinct programs by train score are
scored once on the validation split and the summary shows the gap between the two:
a large positive gap says the search fitted the train instances rather than the task.
Validation scores are stored (``evaluations`` rows with split ``validation``, and
``programs.validation_score``), so a resumed run does not score them again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from evoengine.archive.archive import Archive
from evoengine.archive.records import ProgramRecord
from evoengine.archive.store import ArchiveStore
from evoengine.evaluation.evaluator import Evaluator

UNTRUSTED_SCORE_NOTE = ("score computed inside the sandbox by the problem's own evaluator "
                        "(untrusted)")


@dataclass
class ValidatedProgram:
    """One of the best programs with both of its scores."""

    program: ProgramRecord
    train: float
    validation: float | None  # None: not scored, or invalid on validation
    validation_error: str | None = None

    @property
    def gap(self) -> float | None:
        """train - validation: how much better it looks on the instances it was chosen on."""
        return None if self.validation is None else self.train - self.validation


def best_programs(archive: Archive, count: int) -> list[ProgramRecord]:
    """The ``count`` best valid programs by train score, one per distinct code (the
    earliest copy: migrations and island seeds repeat a program under new ids)."""
    by_code: dict[str, ProgramRecord] = {}
    for island in archive.islands:
        for program in island.top:
            known = by_code.get(program.code_hash)
            if known is None or program.id < known.id:
                by_code[program.code_hash] = program
    if archive.best is not None:
        by_code.setdefault(archive.best.code_hash, archive.best)
    ranked = sorted(by_code.values(), key=lambda p: (-(p.score or 0.0), p.id))
    return ranked[:count]


async def validate_best(archive: Archive, evaluator: Evaluator, store: ArchiveStore,
                        count: int, charge: Callable[[float], None] | None = None
                        ) -> list[ValidatedProgram]:
    """Score the best ``count`` programs on validation (once each) and store the scores.
    Without a validation split, their train scores alone come back. ``charge`` gets
    what each validation spent on models its candidate called (``llm_cost``)."""
    has_validation = "validation" in evaluator.problem.splits
    validated = []
    for program in best_programs(archive, count):
        entry = ValidatedProgram(program, float(program.score or 0.0),
                                 program.validation_score)
        if has_validation and program.validation_score is None:
            result = await evaluator.evaluate(program.code, "validation")
            if charge is not None:
                charge(float(result.metrics.get("llm_cost", 0.0)))
            store.set_validation_score(program.id, result)
            program.validation_score = result.score
            entry.validation = result.score
            if not result.valid:
                first = (result.feedback.splitlines() or [""])[0]
                entry.validation_error = (
                    f"{result.error.value if result.error else 'invalid'}: {first}")[:120]
        validated.append(entry)
    return validated


def summary_lines(validated: list[ValidatedProgram], has_validation: bool,
                  trusted_score: bool) -> list[str]:
    """The train/validation table of the end-of-run summary."""
    if not validated:
        return []
    lines = []
    if has_validation:
        lines.append("best programs: train vs validation (the search saw only train)")
        lines.append(f"  {'id':>6}  {'train':>12}  {'validation':>12}  {'gap':>10}")
        for entry in validated:
            validation = ("invalid" if entry.validation is None
                          else f"{entry.validation:.6g}")
            gap = "" if entry.gap is None or not math.isfinite(entry.gap) else f"{entry.gap:.4g}"
            line = (f"  {entry.program.id:>6}  {entry.train:>12.6g}  {validation:>12}  "
                    f"{gap:>10}")
            if entry.validation_error:
                line += f"  ({entry.validation_error})"
            lines.append(line)
        gaps = [e.gap for e in validated if e.gap is not None]
        if gaps:
            lines.append(f"  mean train - validation gap: {sum(gaps) / len(gaps):.4g}")
    else:
        lines.append("no validation split: train scores only (nothing measures overfitting)")
    if not trusted_score:
        lines.append(f"note: {UNTRUSTED_SCORE_NOTE}")
    return lines
