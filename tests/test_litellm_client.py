"""`llm=litellm` through the real litellm package against the scripted local server.

The scripted server (evoengine.llm.scripted_server) stands in for a model provider,
which cannot be reached here; litellm talks to it as an OpenAI-compatible api_base.
"""

from __future__ import annotations

import asyncio

import pytest

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.litellm_client import LiteLLMClient
from evoengine.llm.scripted_server import ScriptedServer, error, malformed, reply
from evoengine.llm.types import LLMError

MESSAGES = [{"role": "user", "content": "hello"}]


def _client(server: ScriptedServer, **overrides: object) -> LiteLLMClient:
    config = LLMConfig(provider="litellm", model="openai/scripted-model",
                       base_url=server.base_url, backoff_s=0.01, max_retries=2,
                       timeout_s=3.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return LiteLLMClient(config)


def _complete(client: LiteLLMClient):
    return asyncio.run(client.complete(MESSAGES, temperature=0.5, max_tokens=64, seed=3))


def test_reply_tokens_and_configured_price() -> None:
    with ScriptedServer([reply("hi there", prompt_tokens=1000, completion_tokens=500)]) as s:
        completion = _complete(_client(s, price_input_per_mtok=2.0,
                                       price_output_per_mtok=4.0))
    assert completion.text == "hi there"
    assert (completion.prompt_tokens, completion.completion_tokens) == (1000, 500)
    assert completion.cost == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)
    request = s.requests[0]
    assert request["model"] == "scripted-model" and request["messages"] == MESSAGES
    assert request["temperature"] == 0.5 and request["max_tokens"] == 64


def test_a_negative_token_count_counts_zero() -> None:
    """litellm passes a negative count through; with a price it took cost off the
    run's budget."""
    odd = reply("hi", usage={"prompt_tokens": -1000, "completion_tokens": -500})
    with ScriptedServer([odd]) as s:
        completion = _complete(_client(s, price_input_per_mtok=2.0, price_output_per_mtok=4.0))
    assert (completion.prompt_tokens, completion.completion_tokens, completion.cost) == (0, 0, 0)


def test_price_from_litellms_model_table() -> None:
    with ScriptedServer([reply("x", prompt_tokens=1_000_000, completion_tokens=0)]) as s:
        completion = _complete(_client(s, model="openai/gpt-4o-mini"))
    assert completion.cost > 0  # from litellm's bundled table, not from config


@pytest.mark.parametrize("failure", [error(429, retry_after=0), error(500), error(503)])
def test_transient_failures_are_retried(failure: dict) -> None:
    with ScriptedServer([failure, reply("ok")]) as s:
        assert _complete(_client(s)).text == "ok"
    assert len(s.requests) == 2


@pytest.mark.parametrize(("failure", "kind"), [(error(401), "auth"), (error(404), "model"),
                                               (error(400), "bad_request")])
def test_permanent_failures_are_not_retried(failure: dict, kind: str) -> None:
    with ScriptedServer([failure] * 3) as s, pytest.raises(LLMError) as info:
        _complete(_client(s))
    assert info.value.kind == kind and "\n" not in str(info.value)
    assert len(s.requests) == 1


def test_exhausted_retries_and_malformed_replies() -> None:
    with ScriptedServer([error(500)] * 5) as s, pytest.raises(LLMError) as info:
        _complete(_client(s))
    assert info.value.kind == "server" and len(s.requests) == 3
    with ScriptedServer([malformed("no_choices"), reply("fine")]) as s:
        assert _complete(_client(s)).text == "fine"


def test_evo_run_with_llm_litellm(run_evo, tmp_path) -> None:
    """`llm=litellm` end to end: the run's edits come through litellm."""
    diff = ("<<<<<<< SEARCH\n    return -(bins - item)\n=======\n"
            "    return -(bins - item) ** 3\n>>>>>>> REPLACE\n")
    with ScriptedServer(lambda request: reply(diff)) as s:
        result = run_evo("run", "problem=bin_packing_quick", "llm=litellm",
                         "llm.model=openai/scripted-model", f"llm.base_url={s.base_url}",
                         "llm.edit_probabilities={diff: 1, full: 0, crossover: 0}",
                         "sandbox=process", "ui=plain", "search.max_evaluations=3",
                         "name=lite", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "(litellm)" in result.stdout
    assert s.requests and s.requests[0]["model"] == "scripted-model"


def test_a_missing_provider_key_is_refused_before_any_call(monkeypatch) -> None:
    """litellm reports a missing key only when called, as a server error that the
    engine retried for ever; the client now refuses to start, naming the variable."""
    from evoengine.config.compose import load_run_config

    config = load_run_config(["llm=litellm", "llm.model=anthropic/claude-3-5-haiku-latest"])[0]
    assert config.llm.api_key_env == ""  # each provider's own variable, not OPENAI_API_KEY
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-of-another-provider")
    with pytest.raises(LLMError) as info:
        LiteLLMClient(config.llm)
    assert info.value.kind == "auth" and "ANTHROPIC_API_KEY" in str(info.value)
    monkeypatch.setenv("MY_ANTHROPIC_KEY", "sk-ant-test")
    config.llm.api_key_env = "MY_ANTHROPIC_KEY"
    assert LiteLLMClient(config.llm)._api_key == "sk-ant-test"


def test_missing_credentials_at_call_time_are_not_retried(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer([reply("never sent")] * 3) as s, pytest.raises(LLMError) as info:
        client = _client(s)
        client._api_key = None  # as if the key vanished after start-up
        _complete(client)
    assert info.value.kind == "auth" and not s.requests
