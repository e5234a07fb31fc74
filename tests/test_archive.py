"""The in-memory archive: grid insertion, selection strategies, inspirations, migration."""

from __future__ import annotations

import random
from collections import Counter

from evoengine.archive.archive import Archive, step_rng
from evoengine.archive.grid import FeatureSpace, MapElitesGrid
from evoengine.archive.islands import Island
from evoengine.archive.records import ProgramRecord
from evoengine.archive.selection import power_law, score_novelty, tournament, uniform
from evoengine.config.schema import FeatureDimConfig, SearchConfig

SPACE = FeatureSpace([FeatureDimConfig(name="code_length", min=0, max=100, bins=10),
                      FeatureDimConfig(name="f", min=0.0, max=1.0, bins=4)])
_ids = iter(range(1, 10**6))


def program(score: float | None, features: dict[str, float], island: int = 0,
            code: str | None = None, valid: bool = True) -> ProgramRecord:
    record = ProgramRecord(island=island, generation=0, operator="test", model="test",
                           code=code or f"x = {next(_ids)}", valid=valid, score=score,
                           features=features, cell=SPACE.cell(features) if valid else None)
    record.id = next(_ids)
    return record


def test_feature_space_bins_and_clips() -> None:
    assert SPACE.cell({"code_length": 0, "f": 0.0}) == (0, 0)
    assert SPACE.cell({"code_length": 55, "f": 0.5}) == (5, 2)
    assert SPACE.cell({"code_length": 10_000, "f": -3}) == (9, 0)  # clipped to the edges
    assert SPACE.cell({"code_length": float("nan")}) == (0, 0)


def test_grid_keeps_the_best_program_per_cell() -> None:
    grid = MapElitesGrid(SPACE)
    first = program(1.0, {"code_length": 5, "f": 0.1})
    worse = program(0.5, {"code_length": 6, "f": 0.1})  # same cell
    tie = program(1.0, {"code_length": 7, "f": 0.1})
    better = program(2.0, {"code_length": 8, "f": 0.2})
    elsewhere = program(-5.0, {"code_length": 50, "f": 0.9})
    assert grid.consider(first)
    assert not grid.consider(worse)
    assert not grid.consider(tie)  # ties keep the incumbent
    assert grid.consider(better)
    assert grid.consider(elsewhere)
    assert not grid.consider(program(None, {}, valid=False))
    assert len(grid) == 2
    assert [p.score for p in grid.ranked()] == [2.0, -5.0]


def _ranked(n: int) -> list[ProgramRecord]:
    return [program(float(n - i), {"code_length": i, "f": 0}) for i in range(n)]


def test_power_law_prefers_high_ranks_but_reaches_all() -> None:
    ranked = _ranked(5)
    rng = random.Random(0)
    counts = Counter(power_law(ranked, rng, alpha=1.0).id for _ in range(20_000))
    shares = [counts[p.id] / 20_000 for p in ranked]
    expected = [1 / r for r in range(1, 6)]
    expected = [e / sum(expected) for e in expected]
    for share, want in zip(shares, expected, strict=True):
        assert abs(share - want) < 0.02
    assert power_law(ranked, random.Random(1), alpha=0.0) in ranked


def test_score_novelty_favours_parents_with_few_children() -> None:
    ranked = _ranked(2)
    even = Counter(score_novelty(ranked, random.Random(i), {}).id for i in range(4000))
    assert even[ranked[0].id] > even[ranked[1].id]  # better score wins when untried
    crowded = {ranked[0].id: 20}
    skewed = Counter(score_novelty(ranked, random.Random(i), crowded).id for i in range(4000))
    assert skewed[ranked[1].id] > skewed[ranked[0].id]  # many children: explore elsewhere


def test_uniform_and_tournament() -> None:
    ranked = _ranked(4)
    counts = Counter(uniform(ranked, random.Random(i)).id for i in range(8000))
    assert all(abs(counts[p.id] / 8000 - 0.25) < 0.03 for p in ranked)
    wins = Counter(tournament(ranked, random.Random(i), size=3).id for i in range(8000))
    assert wins[ranked[0].id] > wins[ranked[1].id] > wins[ranked[3].id]
    assert tournament(ranked, random.Random(0), size=50) is ranked[0]


def test_island_top_list_is_bounded_and_sorted() -> None:
    island = Island(0, SPACE, top_k=3)
    for score in (1.0, 5.0, 3.0, 4.0, 2.0):
        island.add(program(score, {"code_length": score, "f": 0}))
    assert [p.score for p in island.top] == [5.0, 4.0, 3.0]


def _archive(**search: object) -> Archive:
    return Archive(SearchConfig(num_islands=2, **search), SPACE, seed=7)  # type: ignore[arg-type]


def test_ask_is_deterministic_and_round_robin() -> None:
    archive = _archive()
    for island in (0, 1):
        for score in (1.0, 2.0, 3.0):
            archive.add(program(score, {"code_length": 10 * score, "f": 0.1}, island), True)
    work = [archive.ask(step) for step in range(4)]
    assert [w.island for w in work] == [0, 1, 0, 1]
    again = [archive.ask(step) for step in range(4)]
    assert [w.parent.id for w in work] == [w.parent.id for w in again]
    assert step_rng(7, 3).random() == step_rng(7, 3).random()


def test_inspirations_come_from_top_and_other_cells() -> None:
    archive = _archive(num_top_inspirations=1, num_cell_inspirations=2)
    programs = [program(float(s), {"code_length": 10 * s, "f": 0.1}) for s in range(1, 6)]
    for p in programs:
        archive.add(p, True)
    work = archive.ask(0)
    assert len(work.inspirations) == 3
    assert all(p.id != work.parent.id for p in work.inspirations)
    assert all(p.cell != work.parent.cell for p in work.inspirations[1:])
    best = max(programs, key=lambda p: p.score or 0)
    if work.parent is not best:
        assert work.inspirations[0] is best


def test_migration_copies_elites_along_the_ring() -> None:
    archive = _archive(migration_interval=3, migration_count=1)
    a = program(5.0, {"code_length": 10, "f": 0.1}, island=0, code="a = 1")
    b = program(1.0, {"code_length": 20, "f": 0.1}, island=1, code="b = 1")
    archive.add(a, True)
    archive.add(b, True)
    assert not archive.migration_due()
    archive.add(program(0.5, {"code_length": 30, "f": 0.1}, island=1), True)
    assert archive.migration_due()
    copies = archive.plan_migration()
    assert sorted((c.island, c.code) for c in copies) == [(0, "b = 1"), (1, "a = 1")]
    assert all(c.operator == "migration" and c.parent_id in (a.id, b.id) for c in copies)
    for c in copies:
        c.id = next(_ids)
        archive.add(c, evaluated=False)
    archive.finish_migration()
    assert not archive.migration_due()
    assert archive.evaluations == 3  # copies are not evaluations
    assert archive.plan_migration() == []  # destinations already hold that code
