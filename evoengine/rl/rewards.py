"""What each proposal taught us: its kind of result and its shaped reward.

A proposal is ``valid`` (evaluated, scored), a ``noop`` (the edit changed nothing, or
made a program the run already had), a ``failed_edit`` (the reply could not be applied:
unmatched SEARCH text, no code, or a change outside the EVOLVE-BLOCK), a ``crash``
(evaluated and invalid: crash, syntax, invalid_output, memory, sandbox) or a
``timeout``. A model call that failed (``llm_error:*``) has no reply to learn from and
is ``skipped``.

The shaped reward (GRPO): ``rewards.score`` x the score min-max normalised over the
run's valid programs (0 for the worst, 1 for the best), or minus the penalty of the
failure's kind (``rewards.noop``, ``rewards.failed_edit``, ``rewards.crash``,
``rewards.timeout``). So any valid child beats any failure, and a better child beats a
worse one by how much better it scored on the run's own scale.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoengine.config.rl_schema import RewardWeights
from evoengine.rl.archive_data import Attempt

VALID, NOOP, FAILED_EDIT, CRASH, TIMEOUT, SKIPPED = (
    "valid", "noop", "failed_edit", "crash", "timeout", "skipped")
FAILURES = (NOOP, FAILED_EDIT, CRASH, TIMEOUT)
NOOP_OUTCOMES = ("noop", "duplicate", "too_similar")
FAILED_EDIT_OUTCOMES = ("unmatched", "malformed", "rejected")


def result_kind(attempt: Attempt) -> str:
    """One of valid, noop, failed_edit, crash, timeout, skipped."""
    outcome = attempt.outcome
    if outcome in NOOP_OUTCOMES:
        return NOOP
    if outcome in FAILED_EDIT_OUTCOMES:
        return FAILED_EDIT
    if outcome != "applied":  # llm_error:*, or an outcome this version does not know
        return SKIPPED
    if attempt.child_valid and attempt.child_score is not None:
        return VALID
    if attempt.child_error == "timeout":
        return TIMEOUT
    if attempt.child_error == "rejected_edit":
        return FAILED_EDIT
    return CRASH


@dataclass(frozen=True)
class ScoreScale:
    """Min-max normalisation of scores over a run's valid programs."""

    low: float
    high: float

    @classmethod
    def of(cls, scores: list[float]) -> ScoreScale:
        return cls(min(scores), max(scores)) if scores else cls(0.0, 0.0)

    def normalise(self, score: float) -> float:
        if self.high <= self.low:
            return 1.0
        return min(1.0, max(0.0, (score - self.low) / (self.high - self.low)))


def shaped_reward(attempt: Attempt, kind: str, scale: ScoreScale,
                  weights: RewardWeights) -> float:
    """The GRPO reward of a proposal of ``kind`` (see the module docstring)."""
    if kind == VALID:
        assert attempt.child_score is not None
        return weights.score * scale.normalise(attempt.child_score)
    penalty = {NOOP: weights.noop, FAILED_EDIT: weights.failed_edit, CRASH: weights.crash,
               TIMEOUT: weights.timeout}[kind]
    return -penalty
