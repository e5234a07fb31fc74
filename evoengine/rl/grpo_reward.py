"""The GRPO reward of a completion the policy just sampled, without running it.

GRPO samples fresh completions for each archived prompt, so most of them were never
evaluated. Running the evaluator inside the training loop would tie training to the
sandbox and make a step cost a whole evaluation per sample; instead the reward comes
from the archive, which is cheap, deterministic and runs on a CPU:

1. A completion the archive has for this prompt gets the shaped reward it earned
   (:func:`evoengine.rl.rewards.shaped_reward`).
2. Any other completion is applied as an edit of the prompt's parent (no evaluation):
   one that cannot be applied gets ``-rewards.failed_edit``, one that changes nothing
   ``-rewards.noop``, one that applies 0 (unknown score, neither good nor bad).
3. That is blended with the rewards of the prompt's known completions: with ``s_i``
   the similarity (difflib ratio, 0..1) to known completion ``i``, ``s`` the largest
   and ``w_i = s_i ** 16`` (so the nearest dominate),
   ``s * (sum w_i r_i / sum w_i) + (1 - s) * edit_check``. A near-copy of a
   good edit earns nearly its reward, a near-copy of a crash nearly its penalty, and
   text like none of them the edit check alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Any

from evoengine.config.rl_schema import RewardWeights
from evoengine.mutation.edits import apply_full_rewrite, apply_search_replace

RewardFunction = Callable[..., list[float]]
SHARPNESS = 16  # similarity ** SHARPNESS weighs the known completions: the nearest dominate


def edit_check(completion: str, parent_code: str, edit_kind: str,
               weights: RewardWeights) -> float:
    """0 when the completion applies to the parent, else minus the penalty."""
    apply = apply_search_replace if edit_kind == "diff" else apply_full_rewrite
    try:
        outcome = apply(parent_code, completion).outcome
    except Exception:  # a reply no edit parser expected: a failed edit like any other
        outcome = "malformed"
    if outcome == "applied":
        return 0.0
    return -weights.noop if outcome == "noop" else -weights.failed_edit


def completion_reward(completion: str, known: list[tuple[str, float]], parent_code: str,
                      edit_kind: str, weights: RewardWeights) -> float:
    """The reward of ``completion`` given the prompt's ``known`` (text, reward) pairs."""
    text = completion.strip()
    for known_text, reward in known:
        if known_text.strip() == text:
            return reward
    base = edit_check(completion, parent_code, edit_kind, weights)
    if not known:
        return base
    similarities = [SequenceMatcher(None, text, known_text.strip()).ratio()
                    for known_text, _ in known]
    closest = max(similarities)
    if closest <= 0.0:
        return base
    weights_ = [s ** SHARPNESS for s in similarities]
    total = sum(weights_)
    if total <= 0.0:
        return base
    nearby = sum(w * reward for w, (_, reward) in zip(weights_, known, strict=True))
    return closest * nearby / total + (1.0 - closest) * base


def known_table(completions: list[dict[str, Any]]) -> str:
    """The ``known`` column of a GRPO training row: JSON ``[[text, reward], ...]``."""
    return json.dumps([[c["completion"], float(c["reward"])] for c in completions])


def _text(completion: Any) -> str:
    """A TRL completion: conversational (a list of messages) or plain text."""
    if isinstance(completion, list):
        return str(completion[-1].get("content", "")) if completion else ""
    return str(completion)


def archive_reward(weights: RewardWeights) -> RewardFunction:
    """A TRL reward function reading the ``known``, ``parent_code`` and ``edit_kind``
    columns of the training rows."""

    def archive_reward(prompts: list[Any], completions: list[Any], known: list[str],
                       parent_code: list[str], edit_kind: list[str], **_: Any
                       ) -> list[float]:
        return [completion_reward(_text(completion), [tuple(k) for k in json.loads(table)],
                                  code, kind, weights)
                for completion, table, code, kind
                in zip(completions, known, parent_code, edit_kind, strict=True)]

    return archive_reward
