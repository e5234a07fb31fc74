"""What a problem's trusted ``score.py`` returns to the engine.

``score.py`` runs on the host and never executes candidate code. It exposes::

    def load_instances(split: str, spec: dict, data_dir: pathlib.Path) -> list: ...
    def score(outputs: object, instances: list) -> ScoreResult: ...

``score`` raises :class:`InvalidOutput` with a one-line reason when the raw outputs
that came back from the sandbox are malformed in any way (wrong type or length,
NaN, infinities, out-of-range values, an infeasible solution).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class InvalidOutput(ValueError):
    """The sandbox's raw output failed validation; the message says how."""


@dataclass
class ScoreResult:
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
