"""Feedback is bounded: whatever a scorer or a candidate's output tail says, the archive
and the next prompts get at most MAX_FEEDBACK_CHARS of it, head and tail kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

from evoengine.config.compose import load_run_config
from evoengine.evaluation.evaluator import MAX_FEEDBACK_CHARS, Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox

PROBLEM_YAML = """name: chatty
description: a problem whose scorer talks too much
entry: value
preload: []
splits:
  train: {spec: {}}
"""
SEED = "# EVOLVE-BLOCK-START\ndef value():\n    return 1.0\n# EVOLVE-BLOCK-END\n"
HARNESS = "def run(candidate, instances):\n    return candidate.value()\n"
SCORE = """from evoengine.evaluation.scoring import ScoreResult

def load_instances(split, spec, data_dir):
    return [0]

def score(outputs, instances):
    return ScoreResult(score=float(outputs), feedback="HEAD" + "x" * 200_000 + "TAIL")
"""


def test_a_scorers_huge_feedback_is_cut_to_head_and_tail(tmp_path: Path) -> None:
    folder = tmp_path / "chatty"
    folder.mkdir()
    for name, text in (("problem.yaml", PROBLEM_YAML), ("initial.py", SEED),
                       ("harness.py", HARNESS), ("score.py", SCORE)):
        (folder / name).write_text(text)
    config, _ = load_run_config([f"problem={folder}"])
    backend = ProcessSandbox(pool_size=1)
    evaluator = Evaluator(Problem(config.problem), backend,
                          Limits(timeout_s=30, cpu_s=30, memory_mb=512))

    async def evaluate():
        try:
            return await evaluator.evaluate(SEED)
        finally:
            await backend.close()

    result = asyncio.run(evaluate())
    assert result.valid and result.score == 1.0
    assert len(result.feedback) < MAX_FEEDBACK_CHARS + 100
    assert result.feedback.startswith("HEAD") and result.feedback.endswith("TAIL")
    assert "characters of feedback cut" in result.feedback
