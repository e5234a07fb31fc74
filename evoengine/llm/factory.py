"""Choose the mutator named by ``llm.provider``."""

from __future__ import annotations

from evoengine.config.schema import LLMConfig, ProblemConfig
from evoengine.mutation.gp_mutator import GPMutator
from evoengine.mutation.types import Mutator


def make_mutator(config: LLMConfig, problem: ProblemConfig) -> tuple[Mutator, str]:
    """Return the mutator and the one line the run prints about it."""
    mutator = GPMutator(config.gp, [list(group) for group in problem.gp_vocabulary])
    if config.provider == "auto":
        note = ("mutator: offline GP (no model configured: llm=auto fell back to AST "
                "operators on the EVOLVE-BLOCK)")
    else:
        note = "mutator: offline GP (llm=gp)"
    return mutator, note
