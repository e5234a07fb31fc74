"""Sandbox side of OpenEvolve-format problems: run the dir's own ``evaluator.py``.

An OpenEvolve-format dir is ``initial_program.py`` plus ``evaluator.py`` whose
``evaluate(program_path)`` returns a dict of metrics with ``combined_score`` (or an
object with a ``metrics`` dict and an ``artifacts`` dict), and optionally cascade
stages ``evaluate_stage1/2/3(program_path)``. The engine cannot score such a
problem on the host without running the evaluator, so the evaluator runs here, next
to the candidate, and its score is untrusted (``problem.trusted_score: false``).

The single instance (``evaluators/openevolve/score.py`` builds it on the host)
carries the evaluator's source and the dir's other small files. They are written
into this evaluation's fresh working directory, which goes first on ``sys.path``
(the evaluator may import its helpers and read its data files beside itself), and
the evaluator is called with the path of the candidate's file, which the runner has
already written there. Without the stages (or with ``cascade`` off) ``evaluate``
runs alone. With them, stage 1 runs, and each next stage runs only while the
metrics so far pass the previous stage's threshold (``combined_score``, else the
mean of the numeric metrics but ``error``); later stages' metrics override earlier
ones. An exception in ``evaluate`` or stage 1 ends the evaluation (a crash, with its
traceback as feedback); one in a later stage keeps the earlier metrics, marks
``stageN_passed: 0`` and records the traceback.

Stdlib only: the sandbox image need not have the engine (or OpenEvolve) installed. A
minimal ``openevolve.evaluation_result.EvaluationResult`` is provided when the dir
ships no ``openevolve`` package, since evaluators often return one.
"""

from __future__ import annotations

import base64
import importlib.util
import numbers
import os
import sys
import traceback
from types import ModuleType
from typing import Any

_STAGES = ("evaluate_stage1", "evaluate_stage2", "evaluate_stage3")
_ARTIFACT_CHARS = 2000

_SHIM = '''"""Stand-in for openevolve.evaluation_result, provided by evoengine's harness."""
from dataclasses import dataclass, field


@dataclass
class EvaluationResult:
    metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, metrics):
        return cls(metrics=dict(metrics))

    def to_dict(self):
        return dict(self.metrics)

    def has_artifacts(self):
        return bool(self.artifacts)
'''


def _write_files(files: dict[str, dict[str, str]], root: str) -> None:
    """Write the dir's files (text or base64) under ``root``, keeping their subfolders."""
    for relative, content in files.items():
        path = os.path.normpath(os.path.join(root, relative))
        if not path.startswith(root + os.sep):
            raise ValueError(f"refusing to write {relative!r} outside the work folder")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if "base64" in content:
            with open(path, "wb") as f:
                f.write(base64.b64decode(content["base64"]))
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(content["text"])


def _provide_openevolve_shim(root: str) -> None:
    package = os.path.join(root, "openevolve")
    if os.path.exists(package):
        return
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w", encoding="utf-8") as f:
        f.write("")
    with open(os.path.join(package, "evaluation_result.py"), "w", encoding="utf-8") as f:
        f.write(_SHIM)


def _load_evaluator(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("evaluation_module", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {os.path.basename(path)}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluation_module"] = module
    spec.loader.exec_module(module)
    return module


def _split_result(result: Any) -> tuple[dict[str, float], dict[str, str]]:
    """(numeric metrics, text artifacts) of what an evaluate function returned."""
    artifacts: dict[str, str] = {}
    if isinstance(result, dict):
        raw = result
    elif isinstance(getattr(result, "metrics", None), dict):
        raw = result.metrics
        extra = getattr(result, "artifacts", None)
        if isinstance(extra, dict):
            artifacts.update({str(k): _text(v) for k, v in extra.items()})
    else:
        raise TypeError(f"the evaluator returned {type(result).__name__}, not a dict of "
                        "metrics (with combined_score) or an EvaluationResult")
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, numbers.Real):  # bool, int, float and numpy scalars
            metrics[str(key)] = float(value)
        else:
            artifacts[str(key)] = _text(value)
    return metrics, artifacts


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:_ARTIFACT_CHARS]


def _passes(metrics: dict[str, float], threshold: float) -> bool:
    """OpenEvolve's rule: combined_score, else the mean of the metrics but ``error``."""
    if "combined_score" in metrics:
        return metrics["combined_score"] >= threshold
    values = [v for k, v in metrics.items() if k != "error"]
    return bool(values) and sum(values) / len(values) >= threshold


def _cascade(module: ModuleType, program_path: str,
             thresholds: list[float]) -> tuple[dict[str, float], dict[str, str], int]:
    metrics: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    reached = 0
    for index, name in enumerate(_STAGES):
        stage = getattr(module, name, None)
        if not callable(stage):
            break
        if index > 0 and (index - 1 >= len(thresholds)
                          or not _passes(metrics, float(thresholds[index - 1]))):
            break
        try:
            stage_metrics, stage_artifacts = _split_result(stage(program_path))
        except Exception:
            if index == 0:
                raise
            metrics[f"stage{index + 1}_passed"] = 0.0
            artifacts[f"stage{index + 1}_traceback"] = traceback.format_exc()[-_ARTIFACT_CHARS:]
            break
        metrics.update(stage_metrics)
        artifacts.update(stage_artifacts)
        reached = index + 1
    return metrics, artifacts, reached


def run(candidate: ModuleType, instances: list[dict]) -> dict[str, Any]:
    """Evaluate the candidate with the dir's evaluator; return its raw metrics."""
    job = instances[0]
    root = os.path.realpath(os.getcwd())
    program_path = os.path.realpath(getattr(candidate, "__file__", "") or "")
    if not os.path.isfile(program_path):
        raise FileNotFoundError("the candidate's file is missing from the work folder")
    _write_files(job["files"], root)
    _provide_openevolve_shim(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = _load_evaluator(os.path.join(root, job["evaluator_file"]))
    if job.get("cascade") and callable(getattr(module, _STAGES[0], None)):
        metrics, artifacts, stage = _cascade(module, program_path, list(job["thresholds"]))
    else:
        evaluate = getattr(module, "evaluate", None)
        if not callable(evaluate):
            raise AttributeError(f"{job['evaluator_file']} defines no evaluate(program_path)")
        metrics, artifacts = _split_result(evaluate(program_path))
        stage = 0
    return {"metrics": metrics, "artifacts": artifacts, "stage": stage}
