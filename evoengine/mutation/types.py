"""The mutator contract (DESIGN.md, "Mutator")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ParentView:
    """What a mutator may see of an archived program."""

    program_id: int
    code: str
    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    feedback: str = ""


@dataclass
class Child:
    """A proposed child program and how it was made."""

    code: str
    operator: str  # e.g. "gp:perturb_constant", "gp:crossover", "diff", "full", "crossover"
    model: str  # "gp" for the offline mutator, else the model name
    adapter: str | None = None  # the LoRA adapter that sampled it (RL in the loop), if any
    edit: str = ""  # a human-readable description or the diff that produced the child
    prompt: str = ""
    response: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    second_parent_id: int | None = None  # set by crossover
    # "applied" children are evaluated; any other outcome (unmatched, rejected,
    # malformed, noop, llm_error) is only recorded, with ``message`` saying why.
    outcome: str = "applied"
    message: str = ""


class Mutator(Protocol):
    """``propose(parent, inspirations, feedback, rng) -> Child | None``.

    ``None`` means the mutator could not make a child that differs from its parent;
    the controller records the attempt and does not evaluate anything.

    A mutator may also define ``plan(rng) -> None``: the controller calls it as it
    asks for each step, in step order, before the step waits for a slot; decisions on
    state the mutator learns as steps are written (an ensemble's bandit) belong there.
    """

    name: str

    async def propose(self, parent: ParentView, inspirations: list[ParentView],
                      feedback: str, rng: random.Random) -> Child | None: ...
