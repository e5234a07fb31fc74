"""`llm=litellm` through the real litellm package against the scripted local server.

The scripted server (evoengine.llm.scripted_server) stands in for a model provider,
which cannot be reached here; litellm talks to it as an OpenAI-compatible api_base.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from evoengine.config.llm_schema import LLMConfig
from evoengine.llm.body_cap import body_limit
from evoengine.llm.litellm_client import _HANDLER_ROUTE, _SDK_ROUTE, LiteLLMClient
from evoengine.llm.scripted_server import ScriptedServer, error, flood, malformed, reply
from evoengine.llm.types import LLMError
from tests.conftest import calls_in_turn

MESSAGES = [{"role": "user", "content": "hello"}]


def _client(server: ScriptedServer, **overrides: object) -> LiteLLMClient:
    config = LLMConfig(provider="litellm", model="openai/scripted-model",
                       base_url=server.base_url, backoff_s=0.01, max_retries=2,
                       timeout_s=3.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return LiteLLMClient(config)


def _complete(client: LiteLLMClient):
    async def go():
        try:
            return await client.complete(MESSAGES, temperature=0.5, max_tokens=64, seed=3)
        finally:
            await client.close()

    return asyncio.run(go())


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


def test_a_negative_token_count_costs_nothing_by_the_table() -> None:
    """Without llm.price_*, litellm priced the reply's own (negative) usage: a cost of
    about -$1 that lowered the run's total and its budget."""
    odd = reply("hi", usage={"prompt_tokens": -1_000_000, "completion_tokens": -1_000_000})
    with ScriptedServer([odd]) as s:
        completion = _complete(_client(s, model="openai/gpt-4o-mini"))
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


def test_a_429_waits_as_the_server_asks_and_quota_is_not_retried() -> None:
    """litellm's own backoff stood in for the server's Retry-After (0.01 s here), and
    an exhausted quota was retried as if waiting helped; the openai client did both."""
    for status in (429, 503):
        with ScriptedServer([error(status, retry_after=0.5), reply("ok")]) as s:
            completion = _complete(_client(s))
        assert completion.text == "ok" and completion.latency_s >= 0.5, status
    with ScriptedServer([error(429, code="insufficient_quota"), reply("ok")]) as s, \
            pytest.raises(LLMError) as info:
        _complete(_client(s))
    assert info.value.kind == "rate_limit" and len(s.requests) == 1
    assert "quota exhausted for openai/scripted-model" in str(info.value)


def test_a_reply_litellm_cannot_convert_is_malformed() -> None:
    """A float token count made litellm fail to convert the reply; it came out as a
    server error with litellm's traceback in the message, retried with full backoff."""
    odd = reply("hi", usage={"prompt_tokens": 10.5, "completion_tokens": 3})
    with ScriptedServer([odd] * 5) as s, pytest.raises(LLMError) as info:
        _complete(_client(s))
    assert info.value.kind == "malformed" and len(s.requests) == 2  # retried once
    assert str(info.value) == ("litellm could not read the reply of openai/scripted-model "
                               "(Invalid response object) (after 2 attempts)")


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


# -- a reply that does not end (evoengine/llm/body_cap.py) ----------------------------




def _soon(check: Callable[[], Any], within_s: float = 10.0) -> Any:
    """``check()`` once it is truthy (a server thread records a flood when the client
    hangs up, a moment after the call returned)."""
    deadline = time.monotonic() + within_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


@pytest.mark.parametrize("model", ["openai/scripted-model", "hosted_vllm/scripted-model"],
                         ids=["openai-sdk-route", "litellm-http-handler-route"])
def test_an_endless_body_is_cut_off_and_the_client_goes_on(model: str) -> None:
    """litellm read a reply whole, as the SDK did for llm=openai: a 300 MB body took the
    engine to 780 MB. Now it stops at the most a reply under llm.max_reply_chars can
    take, on both of litellm's routes, and the call fails as malformed, not retried."""
    with ScriptedServer([flood(2000), "next reply"]) as s:
        first, second = calls_in_turn(_client(s, model=model, max_reply_chars=1000), 2,
                                      MESSAGES)
        assert len(s.requests) == 2  # not retried: it would flood again
        assert _soon(lambda: s.flooded)[0] < 50_000_000  # of 2,000 MB (socket buffers)
    assert isinstance(first, LLMError) and first.kind == "malformed"
    assert str(first) == (
        f"the reply from {model} at {s.base_url} passed {body_limit(1000):,} bytes before "
        "it ended (the most a reply of llm.max_reply_chars=1,000 can take); lower "
        "llm.max_tokens or raise llm.max_reply_chars")
    assert second == "next reply"


def test_no_reply_cap_reads_the_whole_body() -> None:
    with ScriptedServer([flood(5), "fine"]) as s:
        (only,) = calls_in_turn(_client(s, max_reply_chars=None), 1, MESSAGES)
        assert _soon(lambda: s.flooded) == [5_000_000]  # read to the end
    assert only == "fine"  # the truncated JSON was retried as before
    assert len(s.requests) == 2


class _FloodAnything(http.server.BaseHTTPRequestHandler):
    """Answers every POST, whatever its path (Anthropic's, Gemini's, Ollama's, ...: the
    scripted server answers OpenAI's only), with a 200 whose body does not end."""

    server: Any

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append(self.path)
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            while sent < 2_000_000_000:
                self.wfile.write(b" " * 65536)
                sent += 65536
        except OSError:
            pass  # the client hung up
        self.server.flooded.append(sent)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def flooding_server() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FloodAnything)
    server.daemon_threads = True
    server.posts, server.flooded = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("provider", sorted(_SDK_ROUTE | _HANDLER_ROUTE))
def test_every_provider_given_a_capped_client_is_cut_off(
        provider: str, flooding_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each provider the client hands a capped client really reads through it: a
    client of the wrong kind, or one litellm ignores, would show here."""
    monkeypatch.setenv("DATAROBOT_API_TOKEN", "not-needed")  # datarobot wants one
    server = flooding_server
    server.posts.clear()
    server.flooded.clear()
    port = server.server_address[1]
    client = LiteLLMClient(LLMConfig(  # uncapped, the call would time out
        provider="litellm", model=f"{provider}/scripted-model", max_reply_chars=1000,
        base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5.0, max_retries=0))
    (only,) = calls_in_turn(client, 1, MESSAGES)
    assert isinstance(only, LLMError) and only.kind == "malformed", only
    assert f"passed {body_limit(1000):,} bytes" in str(only)
    assert len(server.posts) == 1  # neither the engine nor the SDK asked again
    assert _soon(lambda: server.flooded)[0] < 50_000_000
