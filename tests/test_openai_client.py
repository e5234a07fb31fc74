"""OpenAIClient through the real ``openai`` SDK against the scripted HTTP server.

The scripted server is a test double for a real model server (none is reachable
here); every call below goes over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytest.importorskip("openai")

from evoengine.config.llm_schema import LLMConfig  # noqa: E402
from evoengine.llm.openai_client import (  # noqa: E402
    RETRY_AFTER_CAP_S,
    OpenAIClient,
)
from evoengine.llm.retry import MAX_BACKOFF_S, backoff_delay
from evoengine.llm.retry import retry_after_s as _retry_after
from evoengine.llm.scripted_server import (  # noqa: E402
    ScriptedServer,
    drop,
    error,
    malformed,
    reply,
)
from evoengine.llm.types import MAX_TOKEN_COUNT, Completion, LLMError  # noqa: E402

MESSAGES = [{"role": "system", "content": "You improve programs."},
            {"role": "user", "content": "Make it faster please"}]


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


TRANSPORT = {"http_client": "auto"}  # set per test by the fixture below


@pytest.fixture(autouse=True, params=["aiohttp", "httpx"])
def _transport(request: pytest.FixtureRequest) -> None:
    """Every test runs over both HTTP clients the SDK can sit on (llm.http_client)."""
    if request.param == "aiohttp":
        pytest.importorskip("httpx_aiohttp")
    TRANSPORT["http_client"] = request.param


def make_config(server: ScriptedServer, **overrides: Any) -> LLMConfig:
    values: dict[str, Any] = {"provider": "openai", "model": "test-model",
                              "base_url": server.base_url, "timeout_s": 5.0,
                              "max_retries": 3, "backoff_s": 0.01, **TRANSPORT}
    values.update(overrides)
    return LLMConfig(**values)


def call(config: LLMConfig, *, temperature: float = 0.7, max_tokens: int = 256,
         seed: int | None = None) -> Completion:
    async def _go() -> Completion:
        client = OpenAIClient(config)
        try:
            return await client.complete(MESSAGES, temperature=temperature,
                                         max_tokens=max_tokens, seed=seed)
        finally:
            await client.close()

    return asyncio.run(_go())


def call_error(config: LLMConfig) -> LLMError:
    with pytest.raises(LLMError) as info:
        call(config)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return info.value


# -- normal replies and accounting ------------------------------------------------------


def test_normal_reply_tokens_latency_cost() -> None:
    script = [reply("def solve(): return 42", prompt_tokens=1000, completion_tokens=500,
                    delay=0.05)]
    with ScriptedServer(script) as server:
        config = make_config(server, price_input_per_mtok=2.0, price_output_per_mtok=8.0)
        completion = call(config)
    assert completion.text == "def solve(): return 42"
    assert completion.model == "test-model"
    assert completion.prompt_tokens == 1000
    assert completion.completion_tokens == 500
    assert completion.cost == pytest.approx(1000 * 2.0 / 1e6 + 500 * 8.0 / 1e6)
    assert 0.05 <= completion.latency_s < 5.0
    assert len(server.requests) == 1


def test_request_carries_model_temperature_max_tokens_messages_and_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    with ScriptedServer(["ok"]) as server:
        call(make_config(server, model="my-model", api_key_env="MY_KEY"),
             temperature=0.3, max_tokens=77, seed=5)
    [body] = server.requests
    assert body["model"] == "my-model"
    assert body["temperature"] == pytest.approx(0.3)
    assert body["max_tokens"] == 77
    assert body["seed"] == 5
    assert body["messages"] == MESSAGES
    assert server.request_headers[0]["authorization"] == "Bearer sk-test-123"


def test_no_seed_is_not_sent_and_local_server_gets_placeholder_key() -> None:
    with ScriptedServer(["ok"]) as server:
        call(make_config(server))
    assert "seed" not in server.requests[0]
    assert server.request_headers[0]["authorization"] == "Bearer not-needed"


def test_no_usage_means_zero_tokens_and_no_prices_means_zero_cost() -> None:
    with ScriptedServer([reply("x", usage=False)]) as server:
        completion = call(make_config(server, price_input_per_mtok=3.0))
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)
    assert completion.cost == 0.0
    with ScriptedServer([reply("x", prompt_tokens=10, completion_tokens=10)]) as server:
        assert call(make_config(server)).cost == 0.0


@pytest.mark.parametrize("count", ["many", 1e400, -500, None, [1]])
def test_an_odd_token_count_counts_zero(count: object) -> None:
    """Infinity (JSON's 1e999) raised OverflowError out of the client; a negative count
    would take cost off the run's budget."""
    odd = reply("x", usage={"prompt_tokens": count, "completion_tokens": count})
    with ScriptedServer([odd]) as server:
        completion = call(make_config(server, price_input_per_mtok=3.0))
    assert (completion.prompt_tokens, completion.completion_tokens, completion.cost) == (0, 0, 0)


@pytest.mark.parametrize("count", [10**19, 1e30, 10**400])
def test_a_huge_token_count_is_capped(count: object) -> None:
    """10**19 failed the archive's INTEGER write and 10**400 the float cost, each a
    traceback that ended the run; a count past MAX_TOKEN_COUNT is taken as that."""
    odd = reply("x", usage={"prompt_tokens": count, "completion_tokens": 1})
    with ScriptedServer([odd]) as server:
        completion = call(make_config(server, price_input_per_mtok=1.0))
    assert completion.prompt_tokens == MAX_TOKEN_COUNT
    assert completion.cost == pytest.approx(MAX_TOKEN_COUNT / 1e6)


def test_no_prices_take_litellms_table_for_a_model_it_names() -> None:
    """llm=openai counted every call as $0 unless llm.price_* were set, although the
    README promised litellm's model table (so search.max_cost never stopped a run on
    gpt-4o-mini)."""
    pytest.importorskip("litellm")
    from evoengine.llm.price_table import table_prices

    input_price, output_price = table_prices("gpt-4o-mini")
    assert input_price > 0 and output_price > 0
    usage = reply("x", prompt_tokens=1_000_000, completion_tokens=1_000_000)
    with ScriptedServer([usage, usage]) as server:
        assert call(make_config(server, model="gpt-4o-mini")).cost == pytest.approx(
            input_price + output_price)
        # a price in config wins over the table
        assert call(make_config(server, model="gpt-4o-mini", price_input_per_mtok=1.0)
                    ).cost == pytest.approx(1.0)


def test_a_refusal_still_counts_its_tokens() -> None:
    """A reply with usage but no content (a refusal) is billed; its tokens and cost were
    dropped with it, so refusals could run past search.max_cost."""
    with ScriptedServer([malformed("refusal"), malformed("refusal")]) as server:
        exc = call_error(make_config(server, price_input_per_mtok=1.0,
                                     price_output_per_mtok=2.0))
    assert exc.kind == "malformed" and "the model refused: I can't help" in str(exc)
    assert exc.spent is not None  # both attempts' tokens
    assert (exc.spent.prompt_tokens, exc.spent.completion_tokens) == (2000, 20)
    assert exc.spent.cost == pytest.approx((2000 * 1.0 + 20 * 2.0) / 1e6)
    with ScriptedServer([malformed("refusal"), reply("ok", prompt_tokens=5,
                                                     completion_tokens=5)]) as server:
        completion = call(make_config(server, price_input_per_mtok=1.0))
    assert completion.text == "ok" and completion.prompt_tokens == 1005


def test_a_model_without_a_price_is_named_for_a_cost_budget() -> None:
    """A run with search.max_cost says which models' calls it cannot count."""
    from evoengine.llm.price_table import unpriced_note

    local = LLMConfig(provider="openai", model="my-local-model", base_url="http://x/v1")
    assert unpriced_note(local) == (
        "note: no price is known for my-local-model: its calls count as $0 toward "
        "search.max_cost; set llm.price_input_per_mtok and llm.price_output_per_mtok (per "
        "million tokens)")
    assert unpriced_note(LLMConfig(provider="openai", model="my-local-model",
                                   price_output_per_mtok=0.0)) == ""
    assert unpriced_note(LLMConfig(provider="gp")) == ""


# -- transient failures, retried --------------------------------------------------------


def test_429_then_success_respects_retry_after() -> None:
    with ScriptedServer([error(429, retry_after=0.3), "ok"]) as server:
        completion = call(make_config(server, backoff_s=0.01))
    assert completion.text == "ok"
    assert len(server.requests) == 2
    assert completion.latency_s >= 0.3  # waited as asked, not the 0.01 s backoff


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_then_success(status: int) -> None:
    with ScriptedServer([error(status), error(status), "ok"]) as server:
        assert call(make_config(server)).text == "ok"
    assert len(server.requests) == 3


def test_dropped_connection_then_success() -> None:
    with ScriptedServer([drop(), "ok"]) as server:
        assert call(make_config(server)).text == "ok"
    assert len(server.requests) == 2


def test_backoff_is_exponential() -> None:
    with ScriptedServer([error(500)] * 3 + ["ok"]) as server:
        completion = call(make_config(server, backoff_s=0.05, max_retries=3))
    assert completion.text == "ok"
    assert completion.latency_s >= 0.05 + 0.1 + 0.2


@pytest.mark.parametrize(("step", "kind"), [
    (error(429), "rate_limit"),
    (error(500), "server"),
    (error(503), "server"),
    (drop(), "connection"),
])
def test_retries_exhausted(step: dict[str, Any], kind: str) -> None:
    with ScriptedServer([step] * 10) as server:
        exc = call_error(make_config(server, max_retries=2))
    assert exc.kind == kind
    assert len(server.requests) == 3  # the first attempt and 2 retries
    assert "after 3 attempts" in str(exc)


def test_max_retries_zero_means_one_attempt() -> None:
    with ScriptedServer([error(503)] * 3) as server:
        assert call_error(make_config(server, max_retries=0)).kind == "server"
    assert len(server.requests) == 1


def test_slow_reply_times_out_is_retried_then_timeout() -> None:
    with ScriptedServer([reply("late", delay=3.0)] * 3) as server:
        start = time.perf_counter()
        exc = call_error(make_config(server, timeout_s=0.2, max_retries=1))
        elapsed = time.perf_counter() - start
    assert exc.kind == "timeout"
    assert "timeout_s" in str(exc)
    assert len(server.requests) == 2
    assert elapsed < 2.0


def test_slow_reply_then_success() -> None:
    with ScriptedServer([reply("late", delay=3.0), "on time"]) as server:
        assert call(make_config(server, timeout_s=0.3)).text == "on time"


def test_connection_refused_is_connection() -> None:
    server = ScriptedServer(["unused"]).start()
    config = make_config(server, max_retries=1)
    server.stop()
    exc = call_error(config)
    assert exc.kind == "connection"
    assert "could not reach" in str(exc)


# -- permanent failures, not retried ----------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_auth_rejected_not_retried(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with ScriptedServer([error(status)] * 3) as server:
        exc = call_error(make_config(server))
    assert exc.kind == "auth"
    assert "rejected the API key" in str(exc) and "$OPENAI_API_KEY" in str(exc)
    assert len(server.requests) == 1


def test_auth_without_key_says_to_set_it() -> None:
    with ScriptedServer([error(401)]) as server:
        exc = call_error(make_config(server))
    assert exc.kind == "auth" and "OPENAI_API_KEY is not set" in str(exc)
    assert len(server.requests) == 1


def test_no_key_and_no_base_url_is_auth_error() -> None:
    with pytest.raises(LLMError) as info:
        OpenAIClient(LLMConfig(provider="openai", base_url=None))
    assert info.value.kind == "auth"
    assert str(info.value) == "set OPENAI_API_KEY (or llm.api_key_env) or llm.base_url"


def test_404_is_unknown_model() -> None:
    with ScriptedServer([error(404)] * 3) as server:
        exc = call_error(make_config(server, model="gpt-nope"))
    assert exc.kind == "model"
    assert f"unknown model 'gpt-nope' at {server.base_url}; check llm.model" in str(exc)
    assert len(server.requests) == 1


def test_model_not_found_code_on_400_is_model() -> None:
    with ScriptedServer([error(400, code="model_not_found", message="no such model")]) \
            as server:
        assert call_error(make_config(server)).kind == "model"


@pytest.mark.parametrize("status", [400, 422])
def test_other_4xx_is_bad_request(status: int) -> None:
    with ScriptedServer([error(status, message="messages: too long")] * 3) as server:
        exc = call_error(make_config(server))
    assert exc.kind == "bad_request" and "messages: too long" in str(exc)
    assert len(server.requests) == 1


def test_insufficient_quota_is_not_retried() -> None:
    with ScriptedServer([error(429, code="insufficient_quota")] * 3) as server:
        exc = call_error(make_config(server))
    assert exc.kind == "rate_limit" and "quota" in str(exc)
    assert len(server.requests) == 1


# -- malformed replies ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["invalid_json", "not_json", "no_choices", "empty_choices",
                                  "no_content"])
def test_malformed_retried_once_then_error(kind: str) -> None:
    with ScriptedServer([malformed(kind)] * 5) as server:
        exc = call_error(make_config(server, max_retries=4))
    assert exc.kind == "malformed"
    assert len(server.requests) == 2


def test_malformed_then_good_reply() -> None:
    with ScriptedServer([malformed("no_choices"), "fine"]) as server:
        assert call(make_config(server)).text == "fine"


def test_malformed_not_retried_when_retries_off() -> None:
    with ScriptedServer([malformed("invalid_json"), "fine"]) as server:
        assert call_error(make_config(server, max_retries=0)).kind == "malformed"
    assert len(server.requests) == 1


# -- request adaptation -----------------------------------------------------------------


def test_unsupported_max_tokens_switches_to_max_completion_tokens() -> None:
    script = [error(400, param="max_tokens", code="unsupported_parameter",
                    message="Unsupported parameter: 'max_tokens'. Use "
                            "'max_completion_tokens' instead."),
              "first", "second"]

    async def _go(config: LLMConfig) -> list[str]:
        client = OpenAIClient(config)
        try:
            return [(await client.complete(MESSAGES, temperature=1.0, max_tokens=64)).text
                    for _ in range(2)]
        finally:
            await client.close()

    with ScriptedServer(script) as server:
        texts = asyncio.run(_go(make_config(server, max_retries=0)))
    assert texts == ["first", "second"]
    assert server.requests[0]["max_tokens"] == 64
    for body in server.requests[1:]:
        assert "max_tokens" not in body and body["max_completion_tokens"] == 64


# -- the client and the server themselves -----------------------------------------------


def test_sdk_retries_are_off_and_close_is_idempotent() -> None:
    with ScriptedServer([]) as server:
        async def _go() -> None:
            client = OpenAIClient(make_config(server))
            assert client._client.max_retries == 0
            assert client.model == "test-model"
            await client.close()
            await client.close()

        asyncio.run(_go())


def test_http_client_choice_and_missing_aiohttp_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import httpx

    with ScriptedServer(["ok"]) as server:
        async def transport_of(choice: str) -> str:
            client = OpenAIClient(make_config(server, http_client=choice))
            try:
                return type(client._client._client._transport).__module__
            finally:
                await client.close()

        assert asyncio.run(transport_of("httpx")) == httpx.AsyncHTTPTransport.__module__
        if importlib.util.find_spec("httpx_aiohttp") is not None:
            assert asyncio.run(transport_of("auto")).startswith("httpx_aiohttp")
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                            if name == "httpx_aiohttp" else real_find_spec(name, *a))
        assert asyncio.run(transport_of("auto")) == httpx.AsyncHTTPTransport.__module__
        exc = call_error(make_config(server, http_client="aiohttp"))
    assert "pip install 'openai[aiohttp]'" in str(exc) and "http_client=httpx" in str(exc)


def test_retry_after_parsing_and_cap() -> None:
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "250"}) == 0.25
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None
    rng = random.Random(0)
    assert backoff_delay(0, 1.0, 10_000.0, rng) == RETRY_AFTER_CAP_S  # capped
    assert 4.0 <= backoff_delay(2, 1.0, None, rng) <= 5.0  # 1 s doubled twice, + jitter
    assert backoff_delay(30, 1.0, None, rng) <= MAX_BACKOFF_S * 1.25


def test_openai_is_imported_lazily() -> None:
    code = ("import sys, evoengine.llm.openai_client, evoengine.llm.scripted_server; "
            "print('openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_server_lists_model_and_callable_script() -> None:
    import openai

    seen: list[int] = []

    def script(body: dict[str, Any]) -> str:
        seen.append(body["max_tokens"])
        return f"reply {len(seen)}"

    with ScriptedServer(script, model="listed-model") as server:
        async def _go() -> tuple[list[str], list[str]]:
            sdk = openai.AsyncOpenAI(api_key="x", base_url=server.base_url, max_retries=0)
            models = [m.id async for m in sdk.models.list()]
            await sdk.close()
            client = OpenAIClient(make_config(server))
            texts = [(await client.complete(MESSAGES, temperature=0.0,
                                            max_tokens=n)).text for n in (1, 2, 3)]
            await client.close()
            return models, texts

        models, texts = asyncio.run(_go())
    assert models == ["listed-model"]
    assert texts == ["reply 1", "reply 2", "reply 3"]
    assert seen == [1, 2, 3]


def test_exhausted_script_fails_loudly() -> None:
    with ScriptedServer(["only one"]) as server:
        config = make_config(server, max_retries=0)
        assert call(config).text == "only one"
        exc = call_error(config)
    assert exc.kind == "server" and "script exhausted" in str(exc)


def test_server_stops_promptly_while_a_reply_is_delayed() -> None:
    server = ScriptedServer([reply("never", delay=30.0)]).start()
    result: dict[str, Any] = {}

    def client_thread() -> None:
        try:
            call(make_config(server, timeout_s=20.0, max_retries=0))
        except LLMError as exc:
            result["kind"] = exc.kind

    worker = threading.Thread(target=client_thread)
    worker.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.perf_counter()
    server.stop()
    worker.join(timeout=10)
    assert time.perf_counter() - start < 3.0
    assert not worker.is_alive()
    assert result["kind"] == "connection"
    assert server._thread is None
