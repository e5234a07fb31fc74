"""Evaluate a candidate: untrusted run in the sandbox, trusted score on the host."""

from __future__ import annotations

import asyncio
import math
import time

from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import ErrorKind, EvaluationResult
from evoengine.evaluation.sandbox.base import Limits, SandboxBackend
from evoengine.evaluation.scoring import InvalidOutput, ScoreResult

CODE_LENGTH = "code_length"


class Evaluator:
    """Runs candidates of one problem through a sandbox backend and scores them."""

    def __init__(self, problem: Problem, backend: SandboxBackend, limits: Limits) -> None:
        self.problem = problem
        self.backend = backend
        self.limits = limits

    async def evaluate(self, code: str, split: str = "train") -> EvaluationResult:
        job = self.problem.job(split)
        raw = await self.backend.run(code, job, self.limits)
        if not raw.ok:
            feedback = raw.message
            if raw.stderr_tail:
                feedback += "\n--- output tail ---\n" + raw.stderr_tail
            return EvaluationResult.failure(raw.error or ErrorKind.CRASH, feedback,
                                            raw.wall_s, raw.cpu_s)
        started = time.process_time()
        try:
            scored = await asyncio.to_thread(self.problem.scorer.score, raw.output,
                                             job.instances)
            _check_score(scored)
        except InvalidOutput as exc:
            return EvaluationResult.failure(ErrorKind.INVALID_OUTPUT, f"invalid output: {exc}",
                                            raw.wall_s, raw.cpu_s)
        except Exception as exc:  # the raw output broke the scorer: still the candidate's
            return EvaluationResult.failure(
                ErrorKind.INVALID_OUTPUT,
                f"invalid output: the scorer rejected it ({type(exc).__name__}: {exc})",
                raw.wall_s, raw.cpu_s)
        features = {CODE_LENGTH: float(len(code)), **scored.features}
        feedback = scored.feedback
        if raw.stderr_tail:
            feedback += "\n--- output tail ---\n" + raw.stderr_tail
        return EvaluationResult(valid=True, score=float(scored.score), metrics=scored.metrics,
                                features=features, feedback=feedback, wall_s=raw.wall_s,
                                cpu_s=raw.cpu_s + (time.process_time() - started))


def _check_score(scored: object) -> None:
    if not isinstance(scored, ScoreResult):
        raise TypeError("score() must return a ScoreResult")
    if not isinstance(scored.score, (int, float)) or not math.isfinite(scored.score):
        raise InvalidOutput(f"score {scored.score!r} is not a finite number")
