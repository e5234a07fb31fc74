"""Against overfitting: the search sees only train; the end of a run reports the best
programs' validation scores and the gap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from evoengine.archive.archive import Archive
from evoengine.archive.grid import FeatureSpace
from evoengine.archive.records import ProgramRecord
from evoengine.config.schema import SearchConfig
from evoengine.controller.summary import (
    UNTRUSTED_SCORE_NOTE,
    ValidatedProgram,
    best_programs,
    summary_lines,
)
from evoengine.mutation.types import ParentView
from tests.conftest import archive_rows


def record(id_: int, score: float, code: str, island: int = 0,
           operator: str = "gp") -> ProgramRecord:
    return ProgramRecord(island=island, generation=1, operator=operator, model="gp",
                         code=code, valid=True, score=score, features={"code_length": 10.0},
                         id=id_)


def test_best_programs_are_distinct_by_code_and_ranked_by_train_score() -> None:
    search = SearchConfig(num_islands=2)
    archive = Archive(search, FeatureSpace([search.code_length]), seed=0)
    archive.add(record(1, 1.0, "a"), evaluated=True)
    archive.add(record(2, 1.0, "a", island=1, operator="initial_copy"), evaluated=False)
    archive.add(record(3, 3.0, "b"), evaluated=True)
    archive.add(record(4, 2.0, "c", island=1), evaluated=True)
    archive.add(record(5, 3.0, "b", island=1, operator="migration"), evaluated=False)
    chosen = best_programs(archive, 3)
    assert [p.id for p in chosen] == [3, 4, 1]  # a copy never takes a second place
    assert [p.id for p in best_programs(archive, 1)] == [3]


def test_summary_shows_the_gap_invalid_validation_and_untrusted_scores() -> None:
    good = ValidatedProgram(record(3, 3.0, "b"), 3.0, 2.5)
    broken = ValidatedProgram(record(4, 2.0, "c"), 2.0, None, "timeout: took too long")
    lines = summary_lines([good, broken], has_validation=True, trusted_score=False)
    text = "\n".join(lines)
    assert "0.5" in lines[2]  # train 3 - validation 2.5
    assert "invalid" in lines[3] and "timeout: took too long" in lines[3]
    assert "mean train - validation gap: 0.5" in text
    assert UNTRUSTED_SCORE_NOTE in text
    alone = summary_lines([good], has_validation=False, trusted_score=True)
    assert "no validation split" in alone[0] and UNTRUSTED_SCORE_NOTE not in "".join(alone)


def test_mutators_never_see_validation_scores() -> None:
    names = {f.name for f in dataclasses.fields(ParentView)}
    assert not any("valid" in name for name in names)


@pytest.mark.slow
def test_a_run_validates_its_top_programs_once(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", "problem=bin_packing_quick", "llm=gp",
                     "search.max_evaluations=15", "sandbox=process", "ui=none", "name=s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best programs: train vs validation (the search saw only train)" in result.stdout
    assert "mean train - validation gap" in result.stdout
    assert "look:  evo browse " in result.stdout and "evo report " in result.stdout
    db = tmp_path / "runs" / "s" / "archive.db"
    # The search evaluated on train only; validation rows are the end-of-run report's.
    train = archive_rows(db, "SELECT COUNT(*) FROM evaluations WHERE split = 'train'")
    assert train[0][0] == 15
    validated = archive_rows(db, """
        SELECT e.program_id, e.score, p.validation_score, p.score FROM evaluations e
        JOIN programs p ON p.id = e.program_id WHERE e.split = 'validation'""")
    assert 1 <= len(validated) <= 3
    assert all(row[1] == row[2] for row in validated)
    best_train = archive_rows(db, "SELECT MAX(score) FROM programs WHERE valid")[0][0]
    assert max(row[3] for row in validated) == best_train

    resumed = run_evo("resume", str(tmp_path / "runs" / "s"), "search.max_evaluations=18")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = archive_rows(db, """SELECT program_id, COUNT(*) FROM evaluations
                                 WHERE split = 'validation' GROUP BY program_id""")
    assert all(count == 1 for _, count in counts)  # a program is validated once
