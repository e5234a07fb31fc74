"""Live counters of a run, read by the dashboard and the end-of-run summary."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunStats:
    """What the dashboard shows. Updated by the controller at each tell."""

    run_name: str
    problem: str
    mutator: str
    sandbox: str
    max_evaluations: int
    evaluations: int = 0  # including those of earlier sessions of a resumed run
    session_evaluations: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # noop, duplicate, rejected
    best_score: float | None = None
    best_program_id: int | None = None
    cost: float = 0.0
    prompt_tokens: int = 0  # this session's model tokens
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    top: list[tuple[int, float, int, str]] = field(default_factory=list)  # id, score, island, op
    # a model ensemble's (model, pulls, mean reward) per member; empty for one model
    models: list[tuple[str, int, float]] = field(default_factory=list)
    message: str = ""
    notices: list[str] = field(default_factory=list)  # events: in the panel, once in plain

    @property
    def session_seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def evaluations_per_second(self) -> float:
        seconds = self.session_seconds
        return self.session_evaluations / seconds if seconds > 0 else 0.0
