"""The outcome of evaluating one candidate program."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(str, enum.Enum):
    """Why an evaluation produced no score (DESIGN.md, "Evaluation result")."""

    TIMEOUT = "timeout"
    MEMORY = "memory"
    CRASH = "crash"
    INVALID_OUTPUT = "invalid_output"
    SYNTAX = "syntax"
    REJECTED_EDIT = "rejected_edit"
    SANDBOX = "sandbox"


@dataclass
class EvaluationResult:
    """What the archive stores about one evaluation.

    ``score`` is ``None`` exactly when ``valid`` is false; ``error`` then says why.
    """

    valid: bool
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
    error: ErrorKind | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    stage: int = 0

    @classmethod
    def failure(cls, error: ErrorKind, feedback: str, wall_s: float = 0.0,
                cpu_s: float = 0.0) -> EvaluationResult:
        return cls(valid=False, error=error, feedback=feedback, wall_s=wall_s, cpu_s=cpu_s)
