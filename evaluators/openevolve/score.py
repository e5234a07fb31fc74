"""Host side of OpenEvolve-format problems: ship the dir's files, check the metrics.

``load_instances`` reads the dir's ``evaluator.py`` and its other small files (not
the seed, not hidden folders, ``__pycache__``, ``runs/`` or OpenEvolve's output
folders) into the one instance that ``harness.py`` unpacks inside the sandbox. Their
total size is capped (``spec.max_files_mb``) because they travel to the sandbox with
every runner start.

``score`` cannot re-check the work, since the evaluator ran inside the sandbox next
to the candidate; it only checks what came back strictly: ``combined_score`` must be
there and a finite number, or the program is invalid. Other finite numeric metrics
are kept; non-finite ones are dropped and named in the feedback. What came back is
untrusted, so only the first ``MAX_METRICS`` metrics with names of at most
``MAX_NAME_CHARS`` characters are kept, and names are cut short in the feedback: a
hostile output cannot blow up the archive or the next prompt.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evoengine.errors import UserError
from evoengine.evaluation.scoring import InvalidOutput, ScoreResult

SKIPPED_DIRS = ("__pycache__", "runs", "openevolve_output", "node_modules")
DEFAULT_MAX_FILES_MB = 4.0
MAX_METRICS = 100  # metrics kept besides combined_score
MAX_NAME_CHARS = 100  # longer metric names are dropped, and cut short in the feedback


class OpenEvolveDirError(UserError):
    """The OpenEvolve-format dir cannot be shipped to the sandbox as it is."""


def collect_files(root: Path, exclude: set[str], max_mb: float) -> dict[str, dict[str, str]]:
    """The dir's files by relative path: ``{"text": ...}`` or ``{"base64": ...}``."""
    paths = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_DIRS or part.startswith(
                "openevolve_output") for part in relative.parts[:-1]):
            continue
        if path.is_file() and not path.is_symlink() and relative.as_posix() not in exclude \
                and not relative.name.startswith("."):
            paths.append((relative, path))
    total = sum(path.stat().st_size for _, path in paths)
    if total > max_mb * 1024 * 1024:
        largest = sorted(paths, key=lambda item: -item[1].stat().st_size)[:3]
        names = ", ".join(f"{rel.as_posix()} ({p.stat().st_size / 2**20:.1f} MiB)"
                          for rel, p in largest)
        raise OpenEvolveDirError(
            f"{root}: its files total {total / 2**20:.1f} MiB, over the "
            f"{max_mb:g} MiB shipped to the sandbox (largest: {names}); move large files "
            "out or raise problem.splits.train.spec.max_files_mb")
    files: dict[str, dict[str, str]] = {}
    for relative, path in paths:
        data = path.read_bytes()
        try:
            files[relative.as_posix()] = {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            files[relative.as_posix()] = {"base64": base64.b64encode(data).decode("ascii")}
    return files


def load_instances(split: str, spec: Mapping[str, Any], data_dir: Path) -> list[dict]:
    """One instance: the evaluator, the dir's other files and the cascade settings.
    ``data_dir`` is ``<dir>/data``; the dir itself is its parent."""
    root = Path(data_dir).parent
    evaluator_file = str(spec.get("evaluator_file", "evaluator.py"))
    if not (root / evaluator_file).is_file():
        raise OpenEvolveDirError(f"{root}: {evaluator_file} is missing")
    if (root / evaluator_file).is_symlink():  # collect_files ships no symlink
        raise OpenEvolveDirError(f"{root}: {evaluator_file} is a symlink; only the dir's own "
                                 "files go to the sandbox: copy the file in instead")
    exclude = {str(spec.get("program_file", "initial_program.py"))}
    files = collect_files(root, exclude, float(spec.get("max_files_mb", DEFAULT_MAX_FILES_MB)))
    source = files.get(evaluator_file, {}).get("text")
    if source is None:
        raise OpenEvolveDirError(f"{root / evaluator_file} is not UTF-8 text; save it as UTF-8")
    try:  # checked here, on `evo resume` too: a broken evaluator would fail every child
        compile(source, str(root / evaluator_file), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise OpenEvolveDirError(f"{root / evaluator_file} does not parse: "
                                 f"{getattr(exc, 'msg', None) or exc}{line}; fix it") from None
    return [{"evaluator_file": evaluator_file, "files": files,
             "cascade": bool(spec.get("cascade", True)),
             "thresholds": [float(t) for t in spec.get("thresholds", [])]}]


def _finite(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _name(key: object) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:40] + "..."


def score(outputs: object, instances: list) -> ScoreResult:
    """``combined_score`` as the score; every other finite number as a metric."""
    if not isinstance(outputs, dict) or not isinstance(outputs.get("metrics"), dict):
        raise InvalidOutput("the harness returned no metrics dict")
    metrics = outputs["metrics"]
    artifacts = outputs.get("artifacts") if isinstance(outputs.get("artifacts"), dict) else {}
    if "combined_score" not in metrics and "combined_score" in artifacts:
        # the harness moves every value that is not a number to the artifacts, as text
        raise InvalidOutput("the evaluator returned combined_score as "
                            f"{str(artifacts['combined_score'])[:40]!r}, not a number; "
                            "return it as a float")
    if "combined_score" not in metrics:
        keys = ", ".join(_name(k) for k in list(metrics)[:10]) or "none"
        detail = _artifact_summary(artifacts)
        raise InvalidOutput(f"the evaluator returned no combined_score (metrics: {keys})"
                            + (f"; {detail}" if detail else ""))
    combined = metrics["combined_score"]
    if not _finite(combined):
        raise InvalidOutput(f"combined_score is {repr(combined)[:40]}, not a finite number")
    kept = {"combined_score": float(combined)}
    dropped = []
    for k, v in metrics.items():
        if k == "combined_score":
            continue
        if _finite(v) and len(str(k)) <= MAX_NAME_CHARS and len(kept) <= MAX_METRICS:
            kept[str(k)] = float(v)
        else:
            dropped.append(_name(k))
    stage = outputs.get("stage")
    if _finite(stage) and stage:
        kept["cascade_stage"] = float(stage)
    parts = [f"combined_score {float(combined):.6g} (computed by the problem's own "
             "evaluator inside the sandbox)"]
    others = [f"{k} {v:.4g}" for k, v in sorted(kept.items()) if k != "combined_score"]
    if others:
        parts.append("metrics: " + ", ".join(others[:12]))
    if dropped:
        parts.append(f"dropped {len(dropped)} metrics (not finite, over {MAX_METRICS} or a "
                     f"name over {MAX_NAME_CHARS} characters): " + ", ".join(sorted(dropped)[:10]))
    detail = _artifact_summary(artifacts)
    if detail:
        parts.append(detail)
    return ScoreResult(score=float(combined), metrics=kept, feedback="; ".join(parts))


def _artifact_summary(artifacts: Mapping[str, Any]) -> str:
    """The evaluator's text artifacts (stderr, tracebacks, notes), cut short."""
    texts = [f"{_name(k)}: {str(v).strip()[:400]}" for k, v in list(artifacts.items())[:5]
             if str(v).strip()]
    return ("artifacts: " + " | ".join(texts)) if texts else ""
