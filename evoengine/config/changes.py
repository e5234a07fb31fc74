"""What a resume changes in a run's stored config, as lines for the user.

`evo resume runs/x problem.timeout_s=5` used to go on silently under the new
setting while every stored program kept the score it had under the old one. The
resume now says which settings it changed (old value, new value) and, where a
setting decides how a program is scored (``problem.*``), that the stored scores stay.
"""

from __future__ import annotations

from typing import Any

# A value longer than this is cut in the note (a long list, a template path).
_VALUE_CHARS = 40
# ``problem.*`` settings that do not decide a program's score: the grid's axes (a
# resume regrids the stored programs), the prompt's text, the GP mutator's
# vocabulary, the seed's file (read once, at the start) and how long the scorer may
# take (past it the run stops; no score changes).
_NOT_SCORING = ("problem.description", "problem.features", "problem.gp_vocabulary",
                "problem.evolve_file", "problem.score_timeout_s")


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs, in the
    order of ``new``'s keys; nested mappings and lists of the same length are walked
    (``problem.features[0].bins``), lists of other lengths compared whole."""
    changes: list[tuple[str, Any, Any]] = []
    _walk(old, new, "", changes)
    return changes


def _walk(old: Any, new: Any, prefix: str, changes: list[tuple[str, Any, Any]]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            _walk(old.get(key), new.get(key), f"{prefix}{key}.", changes)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (was, now) in enumerate(zip(old, new, strict=True)):
            _walk(was, now, f"{prefix[:-1]}[{index}].", changes)
    elif old != new:
        changes.append((prefix[:-1], old, new))


def describe_changes(changes: list[tuple[str, Any, Any]]) -> list[str]:
    """Notes for the changes a resume makes: one line listing them all, and one more
    when settings that decide the scores changed (``problem.splits`` has its own)."""
    if not changes:
        return []
    listed = ", ".join(f"{key} {_short(old)} -> {_short(new)}" for key, old, new in changes)
    notes = [f"resume changes {listed}"]
    problem_keys = [key for key, _old, _new in changes
                    if key.startswith("problem.") and not key.startswith(_NOT_SCORING)]
    if any(key.startswith("problem.splits.") for key in problem_keys):
        notes.append("note: problem.splits changed: the stored programs keep the scores they "
                     "had on the old instances")
    scoring = sorted({key.partition("[")[0] for key in problem_keys
                      if not key.startswith("problem.splits.")})
    if scoring:
        notes.append(f"note: {', '.join(scoring)} changed: the stored programs keep the "
                     "scores they had under the old setting (`evo eval` scores one anew)")
    return notes


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _VALUE_CHARS else text[:_VALUE_CHARS - 3] + "..."
