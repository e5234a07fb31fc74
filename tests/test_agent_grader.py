"""The `agent` problem's grader (problems/agent/grader.py) through the process sandbox:
every HumanEval reference solution passes it, and the generic ways to pass a HumanEval
test without solving the task do not."""

from __future__ import annotations

import asyncio
import gzip
import json

from evoengine.config.compose import load_run_config
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.result import EvaluationResult
from evoengine.evaluation.sandbox.base import Limits
from evoengine.evaluation.sandbox.process import ProcessSandbox
from evoengine.paths import resource_dir

TASKS = resource_dir("problems") / "agent" / "data" / "HumanEval.jsonl.gz"


def _agent(completions: dict[str, str]) -> str:
    """The seed agent with a solve() that returns a fixed completion per task."""
    seed = (resource_dir("problems") / "agent" / "initial.py").read_text()
    start, end = seed.index("# EVOLVE-BLOCK-START"), seed.index("# EVOLVE-BLOCK-END")
    block = (f"import json\nCOMPLETIONS = json.loads({json.dumps(completions)!r})\n\n\n"
             "def solve(task, llm):\n    return COMPLETIONS[task['task_id']]\n")
    return seed[:seed.index("\n", start) + 1] + block + seed[end:]


def _grade(completions: dict[str, str]) -> EvaluationResult:
    task_ids = json.dumps(sorted(completions, key=lambda t: int(t.split("/")[1])))
    config, _ = load_run_config(["problem=agent", f"+problem.splits.train.spec.task_ids={task_ids}",
                                 "problem.cascade=[]"])

    async def evaluate() -> EvaluationResult:
        backend = ProcessSandbox(pool_size=1)
        evaluator = Evaluator(Problem(config.problem), backend,
                              Limits(timeout_s=300, cpu_s=120, memory_mb=1024))
        try:
            return await evaluator.evaluate(_agent(completions))
        finally:
            await backend.close()
    return asyncio.run(evaluate())


def test_every_reference_solution_passes() -> None:
    with gzip.open(TASKS, "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f if line.strip()]
    result = _grade({t["task_id"]: t["prompt"] + t["canonical_solution"] for t in tasks})
    assert result.valid, result.feedback
    assert result.score == 1.0, result.feedback


# Each completion "solves" its task only by a generic trick against HumanEval's tests.
ALWAYS_EQUAL = '''
class Anything:
    def __eq__(self, other):
        return True

def has_close_elements(numbers, threshold):
    return Anything()
'''
EQUAL_LIST = '''
class Groups(list):
    def __eq__(self, other):
        return True

def separate_paren_groups(paren_string):
    return Groups()
'''
EQUAL_INT = '''
class Flag(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__

def below_zero(operations):
    return Flag(0)
'''
PATCHED_ABS = '''
import builtins
builtins.abs = lambda value: 0

def mean_absolute_deviation(numbers):
    return 0.0
'''
OWN_BUILTINS = '''
import builtins
__builtins__ = dict(vars(builtins), abs=lambda value: 0)

def truncate_number(number):
    return 0.5
'''
PATCHING_THREAD = '''
import builtins, threading, time

def _patch():
    while True:
        builtins.abs = lambda value: 0
        time.sleep(0.0001)

threading.Thread(target=_patch, daemon=True).start()
time.sleep(0.01)

def mean_absolute_deviation(numbers):
    return 0.0
'''


def test_generic_tricks_pass_no_task() -> None:
    # HumanEval/2's first assertion has no abs(), so the same tasks cannot take all
    # tricks: each trick gets a task whose test it would defeat.
    result = _grade({"HumanEval/0": ALWAYS_EQUAL, "HumanEval/1": EQUAL_LIST,
                     "HumanEval/3": EQUAL_INT, "HumanEval/4": PATCHED_ABS})
    assert result.valid, result.feedback
    assert result.score == 0.0, result.feedback
    assert "HumanEval/0 (TypeError)" in result.feedback
    assert "HumanEval/1 (TypeError)" in result.feedback
    assert "HumanEval/3 (TypeError)" in result.feedback
    assert "HumanEval/4 (assertion failed)" in result.feedback


def test_own_builtins_and_threads_pass_no_task() -> None:
    result = _grade({"HumanEval/2": OWN_BUILTINS,
                     "HumanEval/4": PATCHING_THREAD})
    assert result.valid, result.feedback
    assert result.score == 0.0, result.feedback
    assert "HumanEval/2 (assertion failed)" in result.feedback
    assert "HumanEval/4 (RuntimeError)" in result.feedback
