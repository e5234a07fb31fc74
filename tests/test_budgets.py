"""Budgets and concurrency bounds of the controller, in process.

The costly mutator below is a test double for a paid model (none can be reached
here): it wraps the real GP mutator and reports a price per call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

from evoengine.config.compose import load_run_config
from evoengine.controller.loop import Controller
from evoengine.controller.setup import RunContext, start_run
from evoengine.controller.stats import RunStats
from evoengine.evaluation.result import EvaluationResult
from evoengine.mutation.types import Child, ParentView


def _context(tmp_path: Path, *overrides: str) -> RunContext:
    config, _ = load_run_config(["problem=bin_packing_quick", "llm=gp", "ui=none",
                                 f"runs_dir={tmp_path}", "search.num_islands=2", *overrides])
    return start_run(config)


def _drive(context: RunContext) -> Controller:
    stats = RunStats("t", "bin_packing", "gp", "process",
                     context.config.search.max_evaluations)
    controller = Controller(context, stats)

    async def go() -> None:
        try:
            await controller.run()
        finally:
            await context.backend.close()

    asyncio.run(go())
    return controller


class PricedMutator:
    """Stands in for a paid model: GP children that cost $0.01 each."""

    name = "priced"

    def __init__(self, inner) -> None:
        self.inner = inner

    async def propose(self, parent: ParentView, inspirations: list[ParentView], feedback: str,
                      rng: random.Random) -> Child | None:
        child = await self.inner.propose(parent, inspirations, feedback, rng)
        if child is not None:
            child.cost = 0.01
        return child


def test_cost_budget_stops_the_run(tmp_path: Path) -> None:
    context = _context(tmp_path, "search.max_evaluations=1000", "search.max_cost=0.05")
    context.mutator = PricedMutator(context.mutator)
    controller = _drive(context)
    assert controller.stop_reason == "cost budget spent"
    assert 0.05 <= controller.stats.cost < 0.05 + 0.01 * 2
    assert context.archive.evaluations < 1000


def test_wall_time_budget_stops_the_run(tmp_path: Path) -> None:
    context = _context(tmp_path, "search.max_evaluations=100000", "search.max_wall_seconds=3")
    controller = _drive(context)
    assert controller.stop_reason == "wall-time budget spent"
    assert context.archive.evaluations < 100000


class StuckMutator:
    """Stands in for a model server that stops answering (a long Retry-After, say):
    after two children every proposal waits 90 s."""

    name = "stuck"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    async def propose(self, parent: ParentView, inspirations: list[ParentView], feedback: str,
                      rng: random.Random) -> Child | None:
        self.calls += 1
        if self.calls > 2:
            await asyncio.sleep(90)
        return await self.inner.propose(parent, inspirations, feedback, rng)


def test_wall_time_budget_does_not_wait_for_steps_in_flight(tmp_path: Path) -> None:
    """The loop stopped asking at the budget but waited for every step in flight: a
    model call sleeping on Retry-After kept a 5 s run going for minutes."""
    context = _context(tmp_path, "search.max_evaluations=100000", "search.max_wall_seconds=2",
                       "search.llm_concurrency=2", "search.eval_concurrency=2")
    context.mutator = StuckMutator(context.mutator)
    controller = _drive(context)
    assert controller.stop_reason == "wall-time budget spent"
    assert controller.elapsed_s < 60  # not the 90 s a stuck proposal waits
    assert context.archive.evaluations == 3  # the seed and the two children


class CountingEvaluator:
    """Wraps the real evaluator and records how many evaluations overlap."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.running = 0
        self.peak = 0

    async def evaluate(self, code: str, split: str = "train") -> EvaluationResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.02)  # widen the window in which overlaps can happen
            return await self.inner.evaluate(code, split)
        finally:
            self.running -= 1


class CountingMutator(PricedMutator):
    name = "counting"

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.running = 0
        self.peak = 0

    async def propose(self, parent, inspirations, feedback, rng):  # type: ignore[override]
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.01)
            child = await self.inner.propose(parent, inspirations, feedback, rng)
            return child
        finally:
            self.running -= 1


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    context = _context(tmp_path, "search.max_evaluations=30", "search.llm_concurrency=2",
                       "search.eval_concurrency=3", "sandbox.pool_size=3")
    context.evaluator = CountingEvaluator(context.evaluator)  # type: ignore[assignment]
    context.mutator = CountingMutator(context.mutator)
    _drive(context)
    assert context.evaluator.peak == 3  # type: ignore[attr-defined]
    assert context.mutator.peak == 2  # type: ignore[attr-defined]
    assert context.archive.evaluations == 30


class SameChildMutator:
    """Every proposal gives the same child: as two model calls in flight may."""

    name = "same"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.first: Child | None = None

    async def propose(self, parent: ParentView, inspirations: list[ParentView], feedback: str,
                      rng: random.Random) -> Child | None:
        await asyncio.sleep(0.05)  # all four steps are in flight before any is told
        while self.first is None:
            child = await self.inner.propose(parent, inspirations, feedback, rng)
            if child is not None and child.outcome == "applied" and child.code != parent.code:
                self.first = child
        return dataclasses.replace(self.first)


def test_the_same_code_from_steps_in_flight_is_evaluated_once(tmp_path: Path) -> None:
    """Only the archive was checked for duplicates, so two steps in flight with the same
    child evaluated it twice (README: code already evaluated never is again)."""
    context = _context(tmp_path, "search.max_evaluations=50", "search.max_idle_steps=12",
                       "search.llm_concurrency=4", "search.eval_concurrency=4")
    context.mutator = SameChildMutator(context.mutator)
    controller = _drive(context)
    assert "nothing new to evaluate" in controller.stop_reason
    assert context.archive.evaluations == 2  # the seed and the child, once
