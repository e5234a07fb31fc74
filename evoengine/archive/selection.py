"""Parent selection strategies over an island's elites.

Every strategy takes the elites ranked best first and a ``random.Random`` that the
controller derives from the run seed and the step number, so a step makes the same
choice whenever it is replayed.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping

from evoengine.archive.records import ProgramRecord


def power_law(ranked: list[ProgramRecord], rng: random.Random, alpha: float) -> ProgramRecord:
    """P(rank r) proportional to r^-alpha (r = 1 for the best): exploit, but not only."""
    weights = [(rank + 1) ** -alpha for rank in range(len(ranked))]
    return rng.choices(ranked, weights=weights, k=1)[0]


def score_novelty(ranked: list[ProgramRecord], rng: random.Random,
                  children: Mapping[int, int]) -> ProgramRecord:
    """sigmoid(normalised score) / (1 + children): good parents not yet explored."""
    scores = [p.score or 0.0 for p in ranked]
    mean = statistics.fmean(scores)
    spread = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    weights = []
    for program, score in zip(ranked, scores, strict=True):
        z = (score - mean) / spread if spread > 0 else 0.0
        weights.append(1.0 / (1.0 + math.exp(-z)) / (1.0 + children.get(program.id, 0)))
    return rng.choices(ranked, weights=weights, k=1)[0]


def uniform(ranked: list[ProgramRecord], rng: random.Random) -> ProgramRecord:
    """Every elite equally likely: the most exploratory choice."""
    return ranked[rng.randrange(len(ranked))]


def tournament(ranked: list[ProgramRecord], rng: random.Random, size: int) -> ProgramRecord:
    """The best of ``size`` elites drawn at random (with replacement)."""
    contenders = [rng.randrange(len(ranked)) for _ in range(size)]
    return ranked[min(contenders)]  # ranked is best first


def make_selector(strategy: str, alpha: float, tournament_size: int
                  ) -> Callable[[list[ProgramRecord], random.Random, Mapping[int, int]],
                                ProgramRecord]:
    """Bind a strategy's parameters; the result takes (ranked, rng, children counts)."""
    if strategy == "power_law":
        return lambda ranked, rng, _children: power_law(ranked, rng, alpha)
    if strategy == "score_novelty":
        return score_novelty
    if strategy == "uniform":
        return lambda ranked, rng, _children: uniform(ranked, rng)
    if strategy == "tournament":
        return lambda ranked, rng, _children: tournament(ranked, rng, tournament_size)
    raise ValueError(f"unknown selection strategy {strategy!r}")
