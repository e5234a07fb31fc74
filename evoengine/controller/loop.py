"""The ask/tell loop (DESIGN.md, "The loop").

One coroutine owns the archive. It asks for work, runs mutations and evaluations
concurrently (bounded by ``search.llm_concurrency`` and ``search.eval_concurrency``)
and tells the archive each result as it arrives, writing every step to the database
before it counts. With both concurrencies at 1 the steps run strictly one after
another, so a seed, problem and config always give the same archive.

``search.deterministic`` gives that at any concurrency. Steps are told in step order
(a finished step waits for the ones before it), new steps are asked only right after
a tell, and each step's checks against the archive (known code, novelty) see it as
it was when the step was asked (``Work.told_before``). Every decision then depends
on the order of steps alone, never on which model reply or evaluation came back
first. Up to twice the concurrency of steps are kept asked, so that one slow step
holds the others back less. (RL adapter swaps, ``rl.enabled``, follow training time
and stay outside this.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from evoengine.archive.archive import Work
from evoengine.archive.records import ProgramRecord, code_hash
from evoengine.archive.store import StepRecord
from evoengine.controller.setup import RunContext, unreported_axis
from evoengine.controller.stats import RunStats
from evoengine.evaluation.result import ErrorKind, EvaluationResult
from evoengine.llm.recording import set_call_step
from evoengine.mutation.evolve_block import EvolveBlockError, check_edit_confined
from evoengine.mutation.types import Child
from evoengine.rl.schedule import attach_rl
from evoengine.terminal import command_line

STOPPED_BY_USER = "stopped by user"
# A bad key or an unknown model will not get better by asking again; nor will a replay
# whose recording has no answer (the config or code changed since it was recorded).
FATAL_MODEL_ERRORS = ("llm_error:auth", "llm_error:model", "llm_error:replay")


class RunError(RuntimeError):
    """The run cannot go on; the message says what to fix."""


@dataclass
class StepOutcome:
    outcome: str  # applied | noop | duplicate | too_similar | rejected
    child: Child | None
    evaluation: EvaluationResult | None = None


class Controller:
    """Drives one run until a budget is spent or a stop is requested."""

    def __init__(self, context: RunContext, stats: RunStats) -> None:
        self.ctx = context
        self.stats = stats
        search = context.config.search
        self._llm_slots = asyncio.Semaphore(search.llm_concurrency)
        self._eval_slots = asyncio.Semaphore(search.eval_concurrency)
        self._in_flight_limit = max(search.llm_concurrency, search.eval_concurrency)
        self._deterministic = search.deterministic
        if self._deterministic:
            self._in_flight_limit *= 2  # asked ahead: waiting for a slot, or told later
        self._told = 0  # steps told this session
        self._first_told: dict[str, int] = {}  # code hash -> ``_told`` when it came in
        self._evaluating: set[str] = set()  # code hashes of children being evaluated
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self.stop_reason = ""
        self.model_unusable = False  # stopped by an auth, model or replay error: exit 1
        self._idle_steps = 0
        self.on_step: Callable[[], None] | None = None  # e.g. the dashboard's tick
        self.rl = attach_rl(context)  # rl.enabled: train and swap adapters (rl/schedule.py)

    # --- control ------------------------------------------------------------------------
    def charge(self, cost: float) -> None:
        """Add spending outside the steps (validation of the best programs whose
        candidates called a model) to the run's cost."""
        self.stats.cost += cost

    def request_stop(self, reason: str = STOPPED_BY_USER) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    @property
    def elapsed_s(self) -> float:
        return self.ctx.prior_elapsed_s + (time.monotonic() - self._started)

    def _budget_left(self, in_flight: int) -> bool:
        search = self.ctx.config.search
        if self.ctx.archive.evaluations + in_flight >= search.max_evaluations:
            self.stop_reason = self.stop_reason or "evaluation budget spent"
            return False
        if search.max_wall_seconds and self.elapsed_s >= search.max_wall_seconds:
            self.stop_reason = self.stop_reason or "wall-time budget spent"
            return False
        if search.max_cost and self.stats.cost >= search.max_cost:
            self.stop_reason = self.stop_reason or "cost budget spent"
            return False
        return True

    def _wall_left(self) -> float | None:
        """Seconds to the wall-time budget (None: no such budget)."""
        limit = self.ctx.config.search.max_wall_seconds
        return max(0.0, limit - self.elapsed_s) if limit else None

    # --- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Seed the archive if it is empty, then ask and tell until done."""
        self.stats.cost = self.ctx.prior_cost
        if self.ctx.archive.programs == 0:
            await self._seed()
        self._refresh_stats()
        tasks: dict[asyncio.Task[StepOutcome], Work] = {}
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                self._ask_more(tasks)
                if not tasks or self._stop.is_set():
                    break
                done, _ = await asyncio.wait([*tasks, stop_waiter], timeout=self._wall_left(),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:  # the wall-time budget is hard: steps in flight are dropped
                    self.request_stop("wall-time budget spent")
                    break
                if self._deterministic:  # in step order: the first unfinished one waits
                    for task in sorted(tasks, key=lambda t: tasks[t].step):
                        if not task.done() or self._stop.is_set():
                            break
                        self._tell(tasks.pop(task), task.result())
                        self._ask_more(tasks)
                    self._forget_older_than(tasks)
                    continue
                for task in sorted((t for t in done if t in tasks), key=lambda t: tasks[t].step):
                    self._tell(tasks.pop(task), task.result())
        finally:
            stop_waiter.cancel()
            if self.rl is not None:
                await self.rl.close()
            for task in tasks:  # unfinished steps were never written: nothing is lost
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _ask_more(self, tasks: dict[asyncio.Task[StepOutcome], Work]) -> None:
        """Start steps while slots, budgets and no stop allow."""
        plan = getattr(self.ctx.mutator, "plan", None)
        while (not self._stop.is_set() and len(tasks) < self._in_flight_limit
               and self._budget_left(len(tasks))):
            work = self.ctx.archive.ask(self.ctx.next_step)
            work.told_before = self._told
            if plan is not None:  # decisions on shared learning state, taken in step order
                plan(work.rng)
            self.ctx.next_step += 1
            tasks[asyncio.ensure_future(self._produce(work))] = work

    def _forget_older_than(self, tasks: dict[asyncio.Task[StepOutcome], Work]) -> None:
        """Deterministic runs: the novelty filter may drop what no step asked from now
        on (nor one still running) can see any more."""
        if self.ctx.novelty is not None:
            oldest = min((work.told_before for work in tasks.values()), default=self._told)
            self.ctx.novelty.retain_for(oldest)

    def _kept_note(self) -> str:
        """What a run refused at its seed leaves behind: its folder (config.yaml and
        the database row, status ``failed``), which `evo resume` continues once fixed;
        without this a second `evo run name=...` only said the name was taken."""
        run_dir = self.ctx.run_dir
        return (f" ({run_dir} is kept as a failed run: after the fix, "
                f"`{command_line('evo', 'resume', run_dir)}` continues it)")

    def _retire_model(self, outcome: str, child: Child) -> bool:
        """An ensemble goes on without a member whose key or model the server refused;
        whether it could (False: no ensemble, a replay, or no other member left)."""
        ensemble = getattr(self.ctx.mutator, "ensemble", None)
        if outcome == "llm_error:replay" or ensemble is None or not ensemble.retire(
                child.model):
            return False
        self.stats.notices.append(
            f"model {child.model} left out for the rest of this session: {child.message}")
        return True

    async def _seed(self) -> None:
        """Evaluate the problem's initial program and place it on every island."""
        code = self.ctx.problem.initial_code
        result = await self.ctx.evaluator.evaluate(code)
        if not result.valid:
            first = (result.feedback.splitlines() or [""])[0]
            hint = self.ctx.problem.seed_failure_hint(first)
            raise RunError(f"the seed program {self.ctx.problem.folder}/"
                           f"{self.ctx.problem.config.evolve_file} fails "
                           f"({result.error.value if result.error else 'invalid'}): "
                           f"{first}{hint}{self._kept_note()}")
        unreported = unreported_axis(self.ctx.config, self.ctx.problem.name,
                                     self.ctx.archive.space.names, result.features)
        if unreported is not None:
            raise RunError(unreported + self._kept_note())
        self.stats.cost += result.metrics.get("llm_cost", 0.0)
        seed = self._record(code, "initial", "seed", result, island=0)
        self.ctx.store.add_programs([(seed, result)])
        copies = []
        for island in range(1, self.ctx.config.search.num_islands):
            copy = self._record(code, "initial_copy", "seed", result, island=island)
            copy.parent_id = seed.id
            copies.append(copy)
        self.ctx.store.add_programs([(c, None) for c in copies])
        self._add(seed, evaluated=True)
        for copy in copies:
            self._add(copy, evaluated=False)
        self.stats.session_evaluations += 1

    async def _produce(self, work: Work) -> StepOutcome:
        """Mutate, check, evaluate: everything of a step except writing it down."""
        set_call_step(work.step)  # tags this task's model calls (llm_calls.step)
        async with self._llm_slots:
            child = await self.ctx.mutator.propose(
                work.parent.view(), [p.view() for p in work.inspirations],
                work.parent.feedback, work.rng)
        if child is None:
            return StepOutcome("noop", None)
        if child.outcome != "applied":  # recorded with its prompt and reply, not evaluated
            return StepOutcome(child.outcome, child)
        try:
            check_edit_confined(work.parent.code, child.code)
        except EvolveBlockError as exc:
            return StepOutcome("rejected", child, EvaluationResult.failure(
                ErrorKind.REJECTED_EDIT, str(exc)))
        digest = code_hash(child.code)
        if self._is_known(digest, work):
            return StepOutcome("duplicate", child)
        if self._too_similar(work, child):
            return StepOutcome("too_similar", child)
        if not self._deterministic:  # the same code from two steps in flight: once
            if digest in self._evaluating:
                return StepOutcome("duplicate", child)
            self._evaluating.add(digest)  # until the step is told (_tell)
        async with self._eval_slots:
            result = await self.ctx.evaluator.evaluate(child.code)
        return StepOutcome("applied", child, result)

    def _is_known(self, digest: str, work: Work) -> bool:
        """Is the code of hash ``digest`` in the archive (deterministic runs: as ``work``
        was asked)?"""
        if digest not in self.ctx.archive.hashes:
            return False
        return not self._deterministic or self._first_told.get(digest, 0) <= work.told_before

    def _too_similar(self, work: Work, child: Child) -> bool:
        """``mutation.novelty``: is the child nearly identical to a recent valid program
        of its island? If so, say to which in its message and recorded edit."""
        if self.ctx.novelty is None:
            return False
        as_of = work.told_before if self._deterministic else None
        novel, similarity, similar_id = self.ctx.novelty.check(work.island, child.code,
                                                               as_of)
        if novel:
            return False
        child.outcome = "too_similar"
        child.message = (f"too similar to program {similar_id}: similarity {similarity:.4f} "
                         f">= {self.ctx.novelty.threshold:g} "
                         f"({self.ctx.novelty.backend.name})")
        child.edit = f"{child.message}\n{child.edit}" if child.edit else child.message
        return True

    def _add(self, program: ProgramRecord, evaluated: bool) -> None:
        """Take a stored program into the archive (and the novelty filter's window)."""
        self.ctx.archive.add(program, evaluated=evaluated)
        if self._deterministic:
            self._first_told.setdefault(program.code_hash, self._told)
        if self.ctx.novelty is not None:
            self.ctx.novelty.add_program(program, self._told)

    def _record(self, code: str, operator: str, model: str, result: EvaluationResult,
                island: int, parent: ProgramRecord | None = None, step: int | None = None,
                child: Child | None = None) -> ProgramRecord:
        cell = self.ctx.archive.locate_cell(result.features) if result.valid else None
        return ProgramRecord(
            island=island, generation=(parent.generation + 1) if parent else 0,
            operator=operator, model=model, code=code, valid=result.valid,
            score=result.score, step=step, parent_id=parent.id if parent else None,
            second_parent_id=child.second_parent_id if child else None,
            error=result.error.value if result.error else None, metrics=result.metrics,
            features=result.features, cell=cell, feedback=result.feedback)

    def _tell(self, work: Work, outcome: StepOutcome) -> None:
        """Write the step down, then let the archive and the stats count it."""
        self._told += 1
        program = None
        child = outcome.child
        if child is not None and outcome.outcome == "applied":
            self._evaluating.discard(code_hash(child.code))
        if child is not None and outcome.evaluation is not None:
            program = self._record(child.code, child.operator, child.model,
                                   outcome.evaluation, work.island, work.parent, work.step,
                                   child)
        if child is not None:
            self.stats.cost += child.cost
            self.stats.prompt_tokens += child.prompt_tokens
            self.stats.completion_tokens += child.completion_tokens
        if outcome.evaluation is not None:  # models the candidate called (problems/agent)
            self.stats.cost += outcome.evaluation.metrics.get("llm_cost", 0.0)
        self.ctx.store.record_step(
            StepRecord(step=work.step, parent_id=work.parent.id, outcome=outcome.outcome,
                       child=child, program=program,
                       evaluation=outcome.evaluation if outcome.outcome == "applied" else None),
            elapsed_s=self.elapsed_s, cost=self.stats.cost)
        self._observe(work, outcome, program)
        if program is not None:
            evaluated = outcome.outcome == "applied"
            self._add(program, evaluated=evaluated)
            if evaluated:
                self.stats.session_evaluations += 1
                if program.error:
                    self.stats.failures[program.error] += 1
        if outcome.outcome != "applied":
            self.stats.outcomes[outcome.outcome] += 1
            if (outcome.outcome in FATAL_MODEL_ERRORS and child is not None
                    and not self._retire_model(outcome.outcome, child)):
                self.model_unusable = self.model_unusable or not self._stop.is_set()
                self.request_stop(f"the model cannot be used: {child.message}")
            self._idle_steps += 1
            if self._idle_steps >= self.ctx.config.search.max_idle_steps:
                self.request_stop(f"the mutator made nothing new to evaluate in "
                                  f"{self._idle_steps} steps in a row")
        else:
            self._idle_steps = 0
        if self.ctx.archive.migration_due():
            self._migrate()
        if self.rl is not None:
            self.rl.after_tell(self.ctx.archive.evaluations)
        self._refresh_stats()
        if self.on_step is not None:
            self.on_step()

    def _observe(self, work: Work, outcome: StepOutcome, program: ProgramRecord | None
                 ) -> None:
        """Tell a mutator that learns from results (a model ensemble's bandit) how the
        written step went: the child's score only if it was evaluated and is valid."""
        observe = getattr(self.ctx.mutator, "observe", None)
        if observe is None or outcome.child is None:
            return
        child_score = None
        if outcome.outcome == "applied" and program is not None and program.valid:
            child_score = program.score
        observe(outcome.child, outcome.outcome, work.parent.score, child_score)

    def _migrate(self) -> None:
        copies = self.ctx.archive.plan_migration()
        self.ctx.store.add_programs([(c, None) for c in copies])
        for copy in copies:
            self._add(copy, evaluated=False)
        self.ctx.archive.finish_migration()

    def _refresh_stats(self) -> None:
        archive = self.ctx.archive
        self.stats.evaluations = archive.evaluations
        if archive.best is not None:
            self.stats.best_score = archive.best.score
            self.stats.best_program_id = archive.best.id
        distinct: dict[str, ProgramRecord] = {}  # one row per code (copies share it)
        for program in sorted((p for island in archive.islands for p in island.top[:5]),
                              key=lambda p: (-(p.score or 0.0), p.id)):
            distinct.setdefault(program.code_hash, program)
        ranked = list(distinct.values())[:5]
        self.stats.top = [(p.id, p.score or 0.0, p.island, p.operator) for p in ranked]
        ensemble = getattr(self.ctx.mutator, "ensemble", None)
        if ensemble is not None and len(ensemble) > 1:
            self.stats.models = ensemble.summary()
