"""Choose the mutator named by ``llm.provider``."""

from __future__ import annotations

import os
import socket
import urllib.parse

from evoengine.config.llm_schema import LLMConfig
from evoengine.config.schema import ProblemConfig
from evoengine.llm.ensemble import build_ensemble, member_configs
from evoengine.llm.recording import CallLog, RecordingClient, ReplayClient, replay_label
from evoengine.llm.reply_guard import ReplyGuard
from evoengine.llm.types import LLMClient, LLMError
from evoengine.mutation.gp_mutator import GPMutator
from evoengine.mutation.types import Mutator


def model_configured(config: LLMConfig) -> bool:
    """Whether ``llm=auto`` should use a model: a base URL, or a key in the environment
    (for ``llm.model``, or for any ``llm.models`` entry)."""
    return any(bool(member.base_url) or bool(os.environ.get(member.api_key_env))
               for member, _ in member_configs(config))


def model_client(config: LLMConfig, call_log: CallLog | None = None) -> LLMClient:
    """The client for ``config.model``: the recorded answers when ``llm.replay`` is set
    (no model is called), else litellm (``llm=litellm``), an in-process vLLM engine
    (``llm=vllm``) or the OpenAI-compatible server, behind the reply guard (storable
    text, ``llm.max_reply_chars``); with ``call_log``, every call is recorded in the run's
    ``llm_calls``."""
    if config.replay:
        client: LLMClient = ReplayClient(config.replay, config.model)
    elif config.provider == "litellm":
        from evoengine.llm.litellm_client import LiteLLMClient

        client = LiteLLMClient(config)
    elif config.provider == "vllm":
        from evoengine.llm.vllm_client import VLLMClient

        client = VLLMClient(config)
    else:
        from evoengine.llm.openai_client import OpenAIClient

        client = OpenAIClient(config)
    if not config.replay:  # a recording holds only what passed the guard
        client = ReplyGuard(client, config.max_reply_chars)
    return client if call_log is None else RecordingClient(client, call_log)


def make_mutator(config: LLMConfig, problem: ProblemConfig,
                 call_log: CallLog | None = None) -> tuple[Mutator, str]:
    """Return the mutator and the one line the run prints about it."""
    provider = config.provider
    if config.replay:  # the recorded answers stand in for the model, whatever llm= says
        if provider == "gp":
            raise LLMError("replay", "llm.replay plays back a model's recorded answers and "
                           "llm=gp asks no model; use llm=auto or llm=openai")
        provider = "litellm" if provider == "litellm" else "openai"
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
    from evoengine.mutation.llm_mutator import LLMMutator
    from evoengine.mutation.prompts import PromptBuilder

    # one client per llm.models entry (llm.model alone when the list is empty)
    ensemble = build_ensemble(config, lambda member: model_client(member, call_log))
    prompts = PromptBuilder(problem.name, problem.description, config.templates_dir)
    if config.replay:
        note = f"mutator: replay of {replay_label(config.replay)} (no model is called)"
    else:
        note = f"mutator: {ensemble.announcement()} ({provider})"
        urls = [m.base_url for m, _ in member_configs(config) if m.base_url]
        silent = [url for url in dict.fromkeys(urls) if not answers(url)]
        if silent:  # a warning, not an error: the server may still be starting
            note += (f"; nothing answers at {', '.join(silent)} yet: model calls fail and "
                     "are retried until it does (start the server or fix the base_url)")
    return LLMMutator(ensemble, config, prompts), note


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port."""
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False
