"""Self-modification (``mutation.self_modify=true``), as in the Darwin Goedel Machine.

The genome is an agent whose code defines ``improve(own_source, report, llm)``. Each
child is what the parent itself makes of itself: a sandbox run of the problem's
``improve_harness`` with the parent as the candidate and a report of the parent's
last evaluation (``source``, ``score``, ``metrics``, ``feedback``; JSON in the run's
environment variable ``EVOENGINE_IMPROVE_REPORT``). The
agent's model calls go through the same metered proxy as its evaluations (a session
of their own, capped like one evaluation), so they are recorded in ``llm_calls`` and
charged to the child like any mutation's.

The returned source is a proposal like any other: the controller checks that only
the EVOLVE-BLOCK changed (else the step is recorded as ``rejected``), skips known
code, and evaluates the rest.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem, ProblemError
from evoengine.evaluation.sandbox.base import HarnessJob
from evoengine.llm.sandbox_proxy import SandboxLLMProxy
from evoengine.mutation.edits import diff_summary
from evoengine.mutation.types import Child, ParentView

OPERATOR = "self_modify"
SELF_MODIFY_NOTE = ("mutator: self-modification (mutation.self_modify): each child is the "
                    "parent agent's own improve() run in the sandbox")
REPORT_VAR = "EVOENGINE_IMPROVE_REPORT"  # the report, as JSON, for the improve harness


def check_self_modify(problem: Problem, proxy: SandboxLLMProxy | None) -> Path:
    """The problem's improve harness; ProblemError when self-modification cannot
    run on this problem (called before a run stores anything)."""
    if proxy is None:
        raise ProblemError(f"mutation.self_modify: problem {problem.name!r} serves no "
                           "model to its candidates (problem.llm_calls_per_evaluation "
                           "is 0); improve() needs one")
    if not problem.config.improve_harness:
        raise ProblemError(f"mutation.self_modify: problem {problem.name!r} names no "
                           "improve_harness (the harness that calls improve())")
    harness = problem.folder / problem.config.improve_harness
    if not harness.is_file():
        raise ProblemError(f"mutation.self_modify: {harness} is missing")
    return harness


class SelfModifyMutator:
    """Mutator whose children come from the parent agent's own ``improve()``."""

    name = OPERATOR

    def __init__(self, evaluator: Evaluator) -> None:
        problem = evaluator.problem
        harness = check_self_modify(problem, evaluator.proxy)
        assert evaluator.proxy is not None
        self.evaluator = evaluator
        self.model = evaluator.proxy.model
        self.job = HarnessJob(key=f"{problem.folder}:improve", harness_path=harness,
                              instances=[{}], module_name=Path(problem.config.evolve_file).stem,
                              preload=tuple(problem.config.preload), candidate_process=False,
                              hidden_dirs=evaluator.jobs.hidden_dirs)

    async def propose(self, parent: ParentView, inspirations: list[ParentView],
                      feedback: str, rng: random.Random) -> Child | None:
        report = {"source": parent.code, "score": parent.score,
                  "metrics": dict(parent.metrics), "feedback": feedback or parent.feedback}
        # The report travels in the environment of this one run: instances are set up
        # once per resident runner, and every parent's report differs.
        evaluator = self.evaluator
        session = await evaluator.open_session()
        try:
            job = dataclasses.replace(self.job, env=((REPORT_VAR, json.dumps(report)),))
            raw = await evaluator.run_with_model(parent.code, job, evaluator.limits, session)
        finally:
            if session is not None and evaluator.proxy is not None:
                evaluator.proxy.close_session(session)
        shown = {k: v for k, v in report.items() if k != "source"}
        child = Child(code="", operator=OPERATOR, model=self.model,
                      prompt="improve(own_source, report, llm) with report:\n"
                             + json.dumps(shown, indent=1, default=str))
        if session is not None:
            child.prompt_tokens = session.prompt_tokens
            child.completion_tokens = session.completion_tokens
            child.cost = session.cost
        output = raw.output if raw.ok else None
        source = output.get("source") if isinstance(output, dict) else None
        if not isinstance(source, str):
            why = (raw.message or "improve() failed") if not raw.ok else (
                str(output.get("error")) if isinstance(output, dict) else
                "the improve harness returned no source")
            child.outcome, child.message = "malformed", f"self_modify: {why}"[:1000]
            child.edit = child.message
            if raw.stderr_tail:
                child.response = raw.stderr_tail
            return child
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no store nor hash could take it
            child.outcome, child.message = "malformed", "self_modify: improve() returned " \
                "source that is not valid Unicode (a lone surrogate)"
            child.edit = child.message
            return child
        child.response = source
        if source == parent.code:
            child.outcome, child.message = "noop", "improve() returned its own source unchanged"
            child.edit = child.message
            return child
        child.code = source
        child.edit = diff_summary(parent.code, source)
        return child

    async def close(self) -> None:
        """Stop serving the model to the sandbox (the run is over)."""
        if self.evaluator.proxy is not None:
            await self.evaluator.proxy.close()
