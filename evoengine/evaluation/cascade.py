"""Staged evaluation (DESIGN.md, "Problem": the evaluation cascade).

A problem may list stages in ``problem.cascade``: stage k scores the candidate on the
first ``instances`` train instances, and only a score of at least its ``threshold``
earns the next, larger stage. Weak candidates are thus stopped after a cheap look
(for an agent problem, ten model-driven tasks instead of 164), and the result keeps
the score of the last stage run and its index (``EvaluationResult.stage``, 0-based:
0 is the first stage, and the only one of a problem without a cascade).

Each stage runs the first N_k instances afresh rather than only the new ones: a
harness's raw output need not be splittable by instance, so the stages never have
to be merged. Other splits than ``train`` (validation, test) always run whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoengine.config.schema import CascadeStageConfig


@dataclass(frozen=True)
class Stage:
    """Evaluate on the first ``count`` instances; go on if the score >= ``threshold``."""

    count: int
    threshold: float = float("-inf")


def plan_stages(stages: list[CascadeStageConfig], total: int) -> list[Stage]:
    """The stages to run on a split of ``total`` instances: counts clipped to
    ``total`` and strictly growing (a stage no larger than the one before it adds
    nothing and is dropped), the last one always covering every instance."""
    plan: list[Stage] = []
    for stage in stages:
        count = total if stage.instances is None else min(int(stage.instances), total)
        if plan and count <= plan[-1].count:
            continue
        plan.append(Stage(count, float(stage.threshold)))
        if count == total:
            break
    if not plan or plan[-1].count < total:
        plan.append(Stage(total))
    return plan


def passes(score: float, stage: Stage) -> bool:
    return score >= stage.threshold
