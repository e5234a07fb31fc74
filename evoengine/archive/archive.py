"""The in-memory archive the controller asks for work and tells results to.

Nothing here grows per step with the archive's size: selection looks only at an
island's elites (at most the number of grid cells) and its top-k list, and every
update is a dictionary or bounded-list operation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from evoengine.archive.grid import FeatureSpace
from evoengine.archive.islands import Island, plan_migration
from evoengine.archive.records import COPY_OPERATORS, ProgramRecord
from evoengine.archive.selection import make_selector
from evoengine.config.schema import SearchConfig


@dataclass
class Work:
    """One step's assignment: mutate ``parent`` on ``island`` using ``rng`` only."""

    step: int
    island: int
    parent: ProgramRecord
    inspirations: list[ProgramRecord]
    rng: random.Random
    told_before: int = 0  # steps the controller had written when it asked for this one


def step_rng(seed: int, step: int) -> random.Random:
    """The random stream of one step: the same for the same (seed, step), always."""
    return random.Random(f"evoengine:{seed}:{step}")


class Archive:
    """Islands of MAP-Elites grids plus the run-wide bookkeeping of the search."""

    def __init__(self, search: SearchConfig, space: FeatureSpace, seed: int) -> None:
        self.search = search
        self.space = space
        self.seed = seed
        self.islands = [Island(i, space, search.top_k) for i in range(search.num_islands)]
        self.hashes: set[str] = set()
        self.children: Counter[int] = Counter()
        self.evaluations = 0
        self.programs = 0
        self.migration_rounds = 0
        self.best: ProgramRecord | None = None
        self._select = make_selector(search.selection, search.power_law_alpha,
                                     search.tournament_size)

    # --- building -----------------------------------------------------------------------
    def add(self, program: ProgramRecord, evaluated: bool) -> bool:
        """Take a stored program in; True if it became an elite of its island's cell."""
        self.programs += 1
        self.hashes.add(program.code_hash)
        if evaluated:
            self.evaluations += 1
        if program.parent_id is not None and program.operator not in COPY_OPERATORS:
            self.children[program.parent_id] += 1
        if program.valid and program.score is not None and (
                self.best is None or program.score > (self.best.score or 0.0)):
            self.best = program
        return self.islands[program.island].add(program)

    def rebuild(self, programs: Iterable[ProgramRecord]) -> None:
        """Replay stored programs in id order (resume)."""
        for program in programs:
            self.add(program, evaluated=program.operator not in COPY_OPERATORS)
        # Rounds are due at fixed evaluation counts, so the count says how many ran
        # (a kill between a step and its migration loses that one round, no more).
        self.migration_rounds = self.evaluations // self.search.migration_interval

    def locate_cell(self, features: dict[str, float]) -> tuple[int, ...]:
        return self.space.cell(features)

    # --- ask --------------------------------------------------------------------------
    def ask(self, step: int) -> Work:
        """Choose the island (round robin), parent and inspirations for ``step``."""
        rng = step_rng(self.seed, step)
        island = self.islands[step % len(self.islands)]
        ranked = island.ranked_elites()
        if not ranked:  # an island with no valid program yet borrows from the best one
            island = max(self.islands, key=lambda i: len(i.grid))
            ranked = island.ranked_elites()
        if not ranked:
            raise RuntimeError("the archive has no valid program to mutate")
        parent = self._select(ranked, rng, self.children)
        return Work(step=step, island=island.index, parent=parent,
                    inspirations=self._inspirations(island, parent, rng), rng=rng)

    def _inspirations(self, island: Island, parent: ProgramRecord,
                      rng: random.Random) -> list[ProgramRecord]:
        chosen: list[ProgramRecord] = []
        seen = {parent.code_hash}
        for program in island.top:
            if len(chosen) >= self.search.num_top_inspirations:
                break
            if program.code_hash not in seen:
                chosen.append(program)
                seen.add(program.code_hash)
        others = [p for p in island.ranked_elites()
                  if p.cell != parent.cell and p.code_hash not in seen]
        wanted = min(self.search.num_cell_inspirations, len(others))
        chosen.extend(rng.sample(others, wanted))
        return chosen

    # --- migration --------------------------------------------------------------------
    def migration_due(self) -> bool:
        return self.evaluations // self.search.migration_interval > self.migration_rounds

    def plan_migration(self) -> list[ProgramRecord]:
        """The copies the next migration round makes (store them, then ``add`` them)."""
        return plan_migration(self.islands, self.search.migration_count,
                              self.migration_rounds + 1)

    def finish_migration(self) -> None:
        self.migration_rounds += 1
