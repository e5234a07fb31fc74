"""``evo eval problem=NAME program=PATH [split=...]``: one program, one sandbox run.

The program goes through the same sandbox and scorer as in a run, so what it prints
(validity or the kind of failure, score, metrics, features, time and the feedback a
model would see) is what the search would record. Exit status 0: valid, 1: invalid.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from evoengine.config.compose import ConfigError, load_run_config, override_value
from evoengine.controller.setup import limits_for
from evoengine.controller.summary import UNTRUSTED_SCORE_NOTE
from evoengine.errors import read_utf8
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.evaluation.sandbox.factory import make_backend
from evoengine.llm.factory import model_configured
from evoengine.llm.sandbox_proxy import proxy_for
from evoengine.terminal import shown


def _pop(overrides: list[str], key: str) -> tuple[str | None, list[str]]:
    """The value of ``key=VALUE`` (quotes taken off, as for a config key's value: an
    error message advises KEY='VALUE') and the other overrides."""
    value, rest = None, []
    for item in overrides:
        if item.startswith(f"{key}="):
            value = item.split("=", 1)[1]
            if value[:1] in ("'", '"'):
                value = override_value(value)
        else:
            rest.append(item)
    return value, rest


async def _evaluate(evaluator: Evaluator, code: str, split: str) -> EvaluationResult:
    try:
        return await evaluator.evaluate(code, split)
    finally:
        await evaluator.backend.close()
        if evaluator.proxy is not None:
            await evaluator.proxy.close()


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
    code = read_utf8(path, ConfigError, f"program: {program}")
    # A problem whose candidates call a model (problems/agent) gets the metered proxy,
    # as in a run; its calls are not stored anywhere.
    provider = config.llm.provider
    if provider == "auto":
        provider = "openai" if model_configured(config.llm) else "gp"
    proxy, proxy_note = proxy_for(config, provider, None)
    backend, note = make_backend(config.sandbox)
    print(note)
    if proxy_note:
        print(proxy_note)
    evaluator = Evaluator(problem, backend, limits_for(config), proxy)
    result = asyncio.run(_evaluate(evaluator, code, split))
    print(f"problem {problem.name}, split {split}, program {path}")
    if result.valid:
        print(f"score    {result.score:.6g}")
    else:
        print(f"invalid  ({result.error.value if result.error else 'unknown'}): "
              "the search would record no score for it")
    if not config.problem.trusted_score:
        print(f"note     {UNTRUSTED_SCORE_NOTE}")
    if result.metrics:
        print("metrics  " + json.dumps(result.metrics, sort_keys=True))
    if result.features:
        print("features " + json.dumps(result.features, sort_keys=True))
    if result.stage:
        print(f"stage    {result.stage}")
    print(f"time     {result.wall_s:.3f} s wall, {result.cpu_s:.3f} s CPU")
    if result.feedback:
        # The sandbox imports the program under the problem's file name (initial.py,
        # say); the user knows it by the file they gave.
        feedback = re.sub(rf"(?<![\w.]){re.escape(config.problem.evolve_file)}\b",
                          path.name, result.feedback)
        lines = shown(feedback).rstrip().splitlines()  # the candidate wrote it
        print("feedback " + lines[0])
        for line in lines[1:]:
            print("         " + line)
    return 0 if result.valid else 1
