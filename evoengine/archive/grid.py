"""The MAP-Elites grid: one elite (the best program) per cell of the feature space."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from evoengine.archive.records import ProgramRecord
from evoengine.config.schema import FeatureDimConfig


class FeatureSpace:
    """Maps a program's feature values to grid coordinates.

    Each axis splits ``[min, max)`` into ``bins`` equal cells; values outside the range
    go to the first or last cell, and a missing or non-finite value to the first.
    """

    def __init__(self, dims: Iterable[FeatureDimConfig]) -> None:
        self.dims = list(dims)
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names repeat: {names}")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.bins for d in self.dims)

    def cell(self, features: Mapping[str, float]) -> tuple[int, ...]:
        coords = []
        for dim in self.dims:
            value = features.get(dim.name)
            if value is None or not math.isfinite(float(value)):
                coords.append(0)
                continue
            fraction = (float(value) - dim.min) / (dim.max - dim.min)
            coords.append(min(dim.bins - 1, max(0, int(fraction * dim.bins))))
        return tuple(coords)


class MapElitesGrid:
    """The elites of one island, by cell. Ties keep the incumbent (first come)."""

    def __init__(self, space: FeatureSpace) -> None:
        self.space = space
        self.elites: dict[tuple[int, ...], ProgramRecord] = {}

    def __len__(self) -> int:
        return len(self.elites)

    def consider(self, program: ProgramRecord) -> bool:
        """Place ``program`` in its cell if it beats the cell's elite; True if placed."""
        if not program.valid or program.score is None or program.cell is None:
            return False
        incumbent = self.elites.get(program.cell)
        if incumbent is not None and incumbent.score is not None \
                and program.score <= incumbent.score:
            return False
        self.elites[program.cell] = program
        return True

    def ranked(self) -> list[ProgramRecord]:
        """Elites best first; equal scores by age (lower id first) for determinism."""
        return sorted(self.elites.values(), key=lambda p: (-(p.score or 0.0), p.id))
