"""Staged evaluation (problem.cascade): cheap first stages stop weak candidates, the
result says which stage it reached, and problems without a cascade run as before."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evoengine.config.problem_folders import load_problem_yaml
from evoengine.config.schema import CascadeStageConfig, ProblemConfig
from evoengine.evaluation.cascade import Stage, plan_stages
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox


def test_plan_clips_drops_and_always_ends_on_every_instance() -> None:
    stages = [CascadeStageConfig(10, 0.3), CascadeStageConfig(50, 0.5),
              CascadeStageConfig(None)]
    assert plan_stages(stages, 164) == [Stage(10, 0.3), Stage(50, 0.5), Stage(164)]
    # a small split: the 50-instance stage already covers it, so it is the last
    assert plan_stages(stages, 30) == [Stage(10, 0.3), Stage(30, 0.5)]
    assert plan_stages([CascadeStageConfig(5, 0.1)], 20) == [Stage(5, 0.1), Stage(20)]
    assert plan_stages([], 7) == [Stage(7)]


def _problem(tmp_path: Path, cascade: str) -> Problem:
    """A problem whose instances are numbers; the harness returns the candidate's
    answer for each, and the score is the fraction it gets right (answer == x)."""
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "initial.py").write_text("# EVOLVE-BLOCK-START\ndef answer(x):\n"
                                       "    return x\n# EVOLVE-BLOCK-END\n")
    (folder / "harness.py").write_text(
        "def run(candidate, instances):\n"
        "    return [candidate.answer(x) for x in instances]\n")
    (folder / "score.py").write_text(textwrap.dedent("""
        from evoengine.evaluation.scoring import ScoreResult

        def load_instances(split, spec, data_dir):
            return list(range(spec.get("count", 10)))

        def score(outputs, instances):
            right = sum(o == x for o, x in zip(outputs, instances))
            return ScoreResult(score=right / len(instances),
                               metrics={"seen": float(len(instances))})
    """))
    (folder / "problem.yaml").write_text(textwrap.dedent(f"""
        name: echo
        entry: answer
        preload: []
        splits:
          train: {{spec: {{count: 10}}}}
        {cascade}
    """))
    config = OmegaConf.to_object(load_problem_yaml(folder))
    assert isinstance(config, ProblemConfig)
    config.validate()
    return Problem(config)


def _evaluate(problem: Problem, code: str):
    backend = ProcessSandbox(pool_size=1)

    async def run():
        try:
            return await Evaluator(problem, backend, Limits(timeout_s=30)).evaluate(code)
        finally:
            await backend.close()

    return asyncio.run(run())


WEAK = ("# EVOLVE-BLOCK-START\ndef answer(x):\n    return x if x >= 2 else -1\n"
        "# EVOLVE-BLOCK-END\n")


def test_cascade_stops_weak_candidates_early(tmp_path: Path) -> None:
    problem = _problem(tmp_path, "cascade: [{instances: 2, threshold: 0.5}, "
                                 "{instances: 5, threshold: 0.9}, {instances: null}]")
    strong = _evaluate(problem, problem.initial_code)
    assert (strong.score, strong.stage, strong.metrics["seen"]) == (1.0, 2, 10.0)
    weak = _evaluate(problem, WEAK)  # wrong on 0 and 1: 0 of the first 2
    assert (weak.valid, weak.score, weak.stage, weak.metrics["seen"]) == (True, 0.0, 0, 2.0)
    assert weak.feedback.startswith("cascade: stopped after stage 1 of 3")


def test_without_cascade_one_stage_on_everything(tmp_path: Path) -> None:
    problem = _problem(tmp_path, "")
    result = _evaluate(problem, WEAK)
    assert (result.score, result.stage, result.metrics["seen"]) == (0.8, 0, 10.0)
    assert problem.config.cascade == []


def test_a_bad_stage_size_names_the_key(tmp_path: Path) -> None:
    from evoengine.config.checks import ConfigValueError

    with pytest.raises(ConfigValueError, match=r"problem\.cascade\.0\.instances"):
        ProblemConfig(name="x", entry="f", splits={"train": None},
                      cascade=[CascadeStageConfig(0, 0.5)]).validate()
