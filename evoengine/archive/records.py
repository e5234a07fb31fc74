"""Plain in-memory records of archived programs (what selection and prompts see)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from evoengine.mutation.types import ParentView

#: Operators of rows that copy an evaluated program instead of evaluating a new one.
COPY_OPERATORS = ("migration", "initial_copy")


def code_hash(code: str) -> str:
    """A stable digest of a program's text, used to skip re-evaluating duplicates."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


@dataclass
class ProgramRecord:
    """One program as the archive holds it in memory (a ``programs`` row)."""

    island: int
    generation: int
    operator: str
    model: str
    code: str
    valid: bool
    score: float | None
    step: int | None = None
    parent_id: int | None = None
    second_parent_id: int | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    cell: tuple[int, ...] | None = None
    feedback: str = ""
    validation_score: float | None = None
    id: int = 0  # set when stored
    code_hash: str = ""

    def __post_init__(self) -> None:
        if not self.code_hash:
            self.code_hash = code_hash(self.code)

    def view(self) -> ParentView:
        return ParentView(program_id=self.id, code=self.code, score=self.score,
                          metrics=dict(self.metrics), feedback=self.feedback)


def cell_to_text(cell: tuple[int, ...] | None) -> str | None:
    return None if cell is None else ",".join(str(i) for i in cell)


def cell_from_text(text: str | None) -> tuple[int, ...] | None:
    return None if not text else tuple(int(part) for part in text.split(","))
