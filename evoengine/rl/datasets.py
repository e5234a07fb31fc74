"""DPO pairs, GRPO groups and SFT rows from a run's proposals (``evo export``).

All three group proposals by their exact conversation (the same parent with the same
inspirations and feedback asked in the same way) and write conversational JSONL in the
shape TRL reads: ``prompt`` is a list of chat messages, completions are
``[{"role": "assistant", "content": ...}]``. Each row's ``meta`` says where it came from
(steps, scores, kinds); trainers drop it.

- **DPO** (``prompt``, ``chosen``, ``rejected``): within a group, a valid child whose
  score is strictly above the ``rl.dpo_score_percentile`` percentile of the run's valid
  scores is chosen against every failure of the group (failures are only ever
  rejected) and every valid child that scored strictly lower; at most
  ``rl.max_pairs_per_prompt`` pairs per group, failures first.
- **GRPO** (``prompt``, ``completions``: ``[{completion, reward, kind, score, step}]``,
  ``parent_code``, ``edit_kind``): every group of at least ``rl.grpo_min_group_size``
  answered proposals, each with its shaped reward (:mod:`evoengine.rl.rewards`).
- **SFT** (``prompt``, ``completion``): every valid child that beat its parent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from evoengine.config.rl_schema import RLConfig
from evoengine.errors import UserError
from evoengine.rl.archive_data import Attempt, RunArchive
from evoengine.rl.rewards import FAILURES, SKIPPED, VALID, ScoreScale, result_kind, shaped_reward

FORMATS = ("dpo", "grpo", "sft")


class DatasetError(UserError):
    """A dataset file cannot be used as asked."""


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _groups(attempts: Iterable[Attempt]) -> list[list[Attempt]]:
    """Answered proposals grouped by conversation, in order of first appearance."""
    groups: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        if result_kind(attempt) != SKIPPED:
            groups.setdefault(attempt.prompt_key, []).append(attempt)
    return list(groups.values())


def dpo_pairs(run: RunArchive, rl: RLConfig) -> list[dict[str, Any]]:
    if not run.scores:
        return []
    threshold = float(np.percentile(run.scores, rl.dpo_score_percentile))
    rows = []
    for group in _groups(run.attempts):
        kinds = {a.step: result_kind(a) for a in group}
        valid = sorted((a for a in group if kinds[a.step] == VALID),
                       key=lambda a: (-(a.child_score or 0.0), a.step))
        failures = [a for a in group if kinds[a.step] in FAILURES]
        made = 0
        for chosen in valid:
            assert chosen.child_score is not None
            if chosen.child_score <= threshold:
                break  # sorted best first: no later one passes either
            worse = sorted((a for a in valid if (a.child_score or 0.0) < chosen.child_score),
                           key=lambda a: (a.child_score or 0.0, a.step))
            for rejected in [*failures, *worse]:
                if made >= rl.max_pairs_per_prompt:
                    break
                if rejected.completion == chosen.completion:
                    continue
                made += 1
                rows.append({
                    "prompt": chosen.messages, "chosen": _assistant(chosen.completion),
                    "rejected": _assistant(rejected.completion),
                    "meta": {"chosen_step": chosen.step, "rejected_step": rejected.step,
                             "chosen_score": chosen.child_score,
                             "rejected_score": rejected.child_score,
                             "rejected_kind": kinds[rejected.step],
                             "threshold": threshold}})
    return rows


def grpo_groups(run: RunArchive, rl: RLConfig) -> list[dict[str, Any]]:
    scale = ScoreScale.of(run.scores)
    rows = []
    for group in _groups(run.attempts):
        if len(group) < rl.grpo_min_group_size:
            continue
        completions = []
        for attempt in group:
            kind = result_kind(attempt)
            completions.append({
                "completion": attempt.completion, "kind": kind, "step": attempt.step,
                "score": attempt.child_score if kind == VALID else None,
                "reward": shaped_reward(attempt, kind, scale, rl.rewards)})
        first = group[0]
        rows.append({"prompt": first.messages, "completions": completions,
                     "parent_code": first.parent_code, "edit_kind": first.edit_kind,
                     "meta": {"parent_id": first.parent_id, "score_low": scale.low,
                              "score_high": scale.high}})
    return rows


def sft_rows(run: RunArchive, rl: RLConfig) -> list[dict[str, Any]]:
    rows = []
    for attempt in run.attempts:
        if (result_kind(attempt) == VALID and attempt.parent_score is not None
                and (attempt.child_score or 0.0) > attempt.parent_score):
            rows.append({"prompt": attempt.messages,
                         "completion": _assistant(attempt.completion),
                         "meta": {"step": attempt.step, "score": attempt.child_score,
                                  "parent_score": attempt.parent_score}})
    return rows


BUILDERS = {"dpo": dpo_pairs, "grpo": grpo_groups, "sft": sft_rows}


def why_empty(run: RunArchive, kind: str, rl: RLConfig) -> str:
    """Why ``kind`` has no rows for ``run``: one line saying what would make some."""
    if not run.attempts:
        return ("the run stored no model proposals (the offline GP mutator stores none); "
                "search with an LLM")
    if kind == "sft":
        return "no child scored above its parent (SFT rows are improvements); search longer"
    if kind == "grpo":
        return (f"no prompt got rl.grpo_min_group_size={rl.grpo_min_group_size} answered "
                "proposals (groups need proposals that share a prompt); search longer")
    return (f"no prompt had a valid child above the run's rl.dpo_score_percentile="
            f"{rl.dpo_score_percentile:g} with a worse or failed sibling; search longer, or "
            "lower rl.dpo_score_percentile")


def build_dataset(run: RunArchive, kind: str, rl: RLConfig) -> list[dict[str, Any]]:
    if kind not in BUILDERS:
        raise DatasetError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
    return BUILDERS[kind](run, rl)


def write_jsonl(rows: list[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc.msg}); give a file "
                               "`evo export` wrote") from None
        if not isinstance(row, dict) or "prompt" not in row:
            raise DatasetError(f"{path}:{number}: a row without 'prompt'; give a file "
                               "`evo export` wrote")
        rows.append(row)
    return rows


def detect_format(rows: list[dict[str, Any]]) -> str:
    """dpo (chosen/rejected), grpo (completions) or sft (completion)."""
    first = rows[0] if rows else {}
    if "chosen" in first and "rejected" in first:
        return "dpo"
    if "completions" in first:
        return "grpo"
    return "sft"
