"""Choose the mutator named by ``llm.provider``."""

from __future__ import annotations

import os

from evoengine.config.schema import LLMConfig, ProblemConfig
from evoengine.mutation.gp_mutator import GPMutator
from evoengine.mutation.types import Mutator


def model_configured(config: LLMConfig) -> bool:
    """Whether ``llm=auto`` should use a model: a base URL, or a key in the environment."""
    return bool(config.base_url) or bool(os.environ.get(config.api_key_env))


def make_mutator(config: LLMConfig, problem: ProblemConfig) -> tuple[Mutator, str]:
    """Return the mutator and the one line the run prints about it."""
    provider = config.provider
    if provider == "auto":
        provider = "openai" if model_configured(config) else "gp"
        if provider == "gp":
            return (GPMutator(config.gp, [list(group) for group in problem.gp_vocabulary]),
                    "mutator: offline GP (no model configured: set llm.base_url or "
                    f"${config.api_key_env} to use one; llm=auto fell back to AST operators "
                    "on the EVOLVE-BLOCK)")
    if provider == "gp":
        return (GPMutator(config.gp, [list(group) for group in problem.gp_vocabulary]),
                "mutator: offline GP (llm=gp)")
    from evoengine.llm.openai_client import OpenAIClient
    from evoengine.mutation.llm_mutator import LLMMutator
    from evoengine.mutation.prompts import PromptBuilder

    client = OpenAIClient(config)
    prompts = PromptBuilder(problem.name, problem.description, config.templates_dir)
    where = config.base_url or "api.openai.com"
    return LLMMutator(client, config, prompts), f"mutator: {config.model} at {where} (openai)"
