"""Islands: separate sub-populations, each with its own MAP-Elites grid.

Islands evolve independently and exchange their best elites periodically along a
ring (island i sends to island i+1), which keeps diversity without isolating them.
"""

from __future__ import annotations

import bisect

from evoengine.archive.grid import FeatureSpace, MapElitesGrid
from evoengine.archive.records import ProgramRecord


class Island:
    """One island: its grid, its best programs and the code it has seen."""

    def __init__(self, index: int, space: FeatureSpace, top_k: int) -> None:
        self.index = index
        self.grid = MapElitesGrid(space)
        self.top_k = top_k
        self.top: list[ProgramRecord] = []  # best first, at most top_k
        self._top_keys: list[tuple[float, int]] = []
        self.hashes: set[str] = set()
        self._ranked: list[ProgramRecord] | None = None

    def add(self, program: ProgramRecord) -> bool:
        """Take a program in; True if it became an elite of its cell."""
        self.hashes.add(program.code_hash)
        if not program.valid or program.score is None:
            return False
        key = (-program.score, program.id)
        if len(self.top) < self.top_k or key < self._top_keys[-1]:
            position = bisect.bisect(self._top_keys, key)
            self._top_keys.insert(position, key)
            self.top.insert(position, program)
            del self._top_keys[self.top_k:], self.top[self.top_k:]
        placed = self.grid.consider(program)
        if placed:
            self._ranked = None
        return placed

    def ranked_elites(self) -> list[ProgramRecord]:
        """The grid's elites, best first (cached until the grid changes)."""
        if self._ranked is None:
            self._ranked = self.grid.ranked()
        return self._ranked


def plan_migration(islands: list[Island], count: int, round_index: int) -> list[ProgramRecord]:
    """Copies of each island's ``count`` best elites for the next island on the ring.

    Programs whose code the destination already holds are not sent again. The copies
    keep the source's score and features (no re-evaluation) and point to it as parent.
    """
    if len(islands) < 2 or count == 0:
        return []
    copies = []
    for source in islands:
        destination = islands[(source.index + 1) % len(islands)]
        for elite in source.ranked_elites()[:count]:
            if elite.code_hash in destination.hashes:
                continue
            copies.append(ProgramRecord(
                island=destination.index, generation=elite.generation, operator="migration",
                model=elite.model, code=elite.code, valid=True, score=elite.score,
                parent_id=elite.id, metrics={**elite.metrics, "migration_round": round_index},
                features=dict(elite.features), cell=elite.cell, feedback=elite.feedback,
                code_hash=elite.code_hash))
    return copies
