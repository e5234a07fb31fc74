"""``evo eval problem=NAME program=PATH [split=...]``: one program, one sandbox run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from evoengine.config.compose import ConfigError, load_run_config
from evoengine.controller.setup import limits_for
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.evaluation.sandbox.factory import make_backend


def _pop(overrides: list[str], key: str) -> tuple[str | None, list[str]]:
    value, rest = None, []
    for item in overrides:
        if item.startswith(f"{key}="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
    return value, rest


async def _evaluate(evaluator: Evaluator, code: str, split: str) -> EvaluationResult:
    try:
        return await evaluator.evaluate(code, split)
    finally:
        await evaluator.backend.close()


def eval_command(overrides: list[str]) -> int:
    program, overrides = _pop(overrides, "program")
    split, overrides = _pop(overrides, "split")
    split = split or "train"
    if not program:
        raise ConfigError("program: missing; give the file to evaluate, e.g. "
                          "evo eval problem=bin_packing program=my_program.py")
    path = Path(program)
    if not path.is_file():
        raise ConfigError(f"program: {program} is not a file")
    config, _ = load_run_config(overrides)
    problem = Problem(config.problem)
    if split not in problem.splits:
        raise ConfigError(f"split: problem {problem.name!r} has no split {split!r}; "
                          f"choose one of {', '.join(problem.splits)}")
    backend, note = make_backend(config.sandbox)
    print(note)
    evaluator = Evaluator(problem, backend, limits_for(config))
    result = asyncio.run(_evaluate(evaluator, path.read_text(), split))
    print(f"problem {problem.name}, split {split}, program {path}")
    if result.valid:
        print(f"score    {result.score:.6g}")
    else:
        print(f"invalid  ({result.error.value if result.error else 'unknown'})")
    if result.metrics:
        print("metrics  " + json.dumps(result.metrics, sort_keys=True))
    if result.features:
        print("features " + json.dumps(result.features, sort_keys=True))
    print(f"time     {result.wall_s:.3f} s wall, {result.cpu_s:.3f} s CPU")
    if result.feedback:
        print("feedback " + result.feedback)
    return 0 if result.valid else 1
