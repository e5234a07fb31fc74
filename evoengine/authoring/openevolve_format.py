"""Problems in OpenEvolve's format: a dir with ``initial_program.py`` and ``evaluator.py``.

Such a dir runs unchanged (``evo run problem=path/to/dir``): it is read into a
``ProblemConfig`` whose harness and scorer are the engine's generic ones
(``evaluators/openevolve/``). Its evaluator runs inside the sandbox next to the
candidate, so the run is marked untrusted-score, and the candidate is imported into
the evaluator's process (``candidate_process: false``: the evaluator must import the
candidate's file itself). From the dir's ``config.yaml``, when there is one, come
``evaluator.timeout`` (per call, default 300 s as in OpenEvolve; the sandbox limit
is that times the number of cascade stages), ``evaluator.cascade_evaluation``
(default true), ``evaluator.cascade_thresholds`` (default 0.5, 0.75, 0.9),
``evaluator.memory_limit_mb`` and ``prompt.system_message`` (the description for the
prompts). A value there that the sandbox could not honour (a timeout past a day,
under 1 MiB of memory, a quoted "false", a threshold that is not a finite number) is
a one-line error when the run starts. Everything else there (models, search
settings) is the engine's business and comes from ``conf/`` and the command line.

A seed without EVOLVE-BLOCK markers is evolvable as a whole, as in OpenEvolve; with
markers only the block is. There is one split, ``train``: the dir's evaluator is the
only scorer it has, so validation and test scores are not reported.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import yaml

from evoengine.config.schema import MAX_TIMEOUT_S
from evoengine.errors import UserError, read_utf8

PROGRAM_FILE = "initial_program.py"
EVALUATOR_FILE = "evaluator.py"
STAGE_FUNCTIONS = ("evaluate_stage1", "evaluate_stage2", "evaluate_stage3")
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_THRESHOLDS = [0.5, 0.75, 0.9]
DEFAULT_MEMORY_MB = 2048
# What config.yaml may ask for: from a millisecond to a day per evaluator call (the
# sandbox's CPU limit is a whole number of seconds: a huge one would not be), and
# 1 MiB to 1 TiB of memory (a fraction of a MiB would round to no memory at all).
MIN_TIMEOUT_S = 0.001
MAX_MEMORY_MB = 1 << 20
DEFAULT_DESCRIPTION = (
    "Improve the program. It is scored by the problem's own evaluator.py, which runs it "
    "and reports combined_score (higher is better) and other metrics.")
GP_VOCABULARY = [["max", "min"], ["np.max", "np.min", "np.mean"],
                 ["np.sqrt", "np.log", "np.exp", "np.abs"]]


class OpenEvolveFormatError(UserError):
    """The dir looks like OpenEvolve's format but cannot be read; says what to fix."""


def is_openevolve_dir(folder: Path) -> bool:
    """A dir with initial_program.py and evaluator.py and no problem.yaml."""
    return (folder.is_dir() and not (folder / "problem.yaml").exists()
            and (folder / PROGRAM_FILE).is_file() and (folder / EVALUATOR_FILE).is_file())


def _top_level_functions(path: Path) -> list[str]:
    text = read_utf8(path, OpenEvolveFormatError)
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, before Python 3.12
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise OpenEvolveFormatError(f"{path} does not parse: "
                                    f"{getattr(exc, 'msg', None) or exc}{line}") from exc
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.yaml"
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(read_utf8(path, OpenEvolveFormatError)) or {}
    except yaml.YAMLError as exc:
        raise OpenEvolveFormatError(f"{path} is not valid YAML: "
                                    f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(loaded, dict):
        raise OpenEvolveFormatError(f"{path} must hold a mapping")
    return loaded


def _number(section: dict[str, Any], key: str, default: float, where: Path,
            low: float, high: float) -> float:
    """``evaluator.<key>``: a number from ``low`` to ``high``, or ``default``."""
    value = section.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value <= high:  # NaN fails the comparison too
        raise OpenEvolveFormatError(f"{where}: evaluator.{key} must be a number from "
                                    f"{low:g} to {high:g}, not {value!r}")
    return float(value)


def _flag(section: dict[str, Any], key: str, default: bool, where: Path) -> bool:
    """``evaluator.<key>``: YAML's true or false (a quoted "false" would read as true)."""
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise OpenEvolveFormatError(f"{where}: evaluator.{key} must be true or false "
                                    f"(unquoted), not {value!r}")
    return value


def problem_dict(folder: Path) -> dict[str, Any]:
    """The ``ProblemConfig`` fields of the OpenEvolve-format dir ``folder``."""
    folder = folder.resolve()
    config = _read_config(folder)
    evaluator = config.get("evaluator") or {}
    prompt = config.get("prompt") or {}
    if not isinstance(evaluator, dict) or not isinstance(prompt, dict):
        raise OpenEvolveFormatError(f"{folder / 'config.yaml'}: evaluator and prompt must "
                                    "be mappings")
    where = folder / "config.yaml"
    timeout = _number(evaluator, "timeout", DEFAULT_TIMEOUT_S, where, MIN_TIMEOUT_S,
                      MAX_TIMEOUT_S)
    memory = math.ceil(_number(evaluator, "memory_limit_mb", DEFAULT_MEMORY_MB, where,
                               1, MAX_MEMORY_MB))
    thresholds = evaluator.get("cascade_thresholds", DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, list) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            for t in thresholds):
        raise OpenEvolveFormatError(f"{where}: evaluator.cascade_thresholds must be a list "
                                    f"of finite numbers, not {thresholds!r}"[:300])
    cascade = _flag(evaluator, "cascade_evaluation", True, where)
    stages = [name for name in STAGE_FUNCTIONS
              if name in _top_level_functions(folder / EVALUATOR_FILE)]
    calls = max(1, len(stages)) if cascade else 1
    functions = _top_level_functions(folder / PROGRAM_FILE)
    description = prompt.get("system_message")
    return {
        "name": folder.name,
        "path": str(folder),
        "description": description if isinstance(description, str) and description.strip()
        else DEFAULT_DESCRIPTION,
        "evolve_file": PROGRAM_FILE,
        "entry": functions[0] if functions else "",
        "harness": "evaluators/openevolve/harness.py",
        "scorer": "evaluators/openevolve/score.py",
        "splits": {"train": {"spec": {
            "evaluator_file": EVALUATOR_FILE, "program_file": PROGRAM_FILE,
            "cascade": cascade, "thresholds": [float(t) for t in thresholds],
            "max_files_mb": 4.0}}},
        "timeout_s": timeout * calls,
        "cpu_s": int(math.ceil(timeout * calls)),
        "memory_mb": memory,
        "features": [],
        "gp_vocabulary": GP_VOCABULARY,
        "preload": ["numpy"],
        "candidate_process": False,
        "trusted_score": False,
        "evolve_whole_file": True,
    }
