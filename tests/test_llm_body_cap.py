"""A server that streams without end (evoengine/llm/body_cap.py). The SDK read a
response whole before ``llm.max_reply_chars`` could look at it: a 300 MB body took the
engine to 940 MB of memory. Now the read stops at the most a reply under the cap can
take, and the call fails as ``malformed`` with one line."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("openai")

from evoengine.config.llm_schema import LLMConfig  # noqa: E402
from evoengine.llm.body_cap import body_limit  # noqa: E402
from evoengine.llm.openai_client import OpenAIClient  # noqa: E402
from evoengine.llm.scripted_server import ScriptedServer, flood  # noqa: E402
from evoengine.llm.types import LLMError  # noqa: E402
from tests.conftest import calls_in_turn  # noqa: E402

MESSAGES = [{"role": "user", "content": "improve it"}]


@pytest.fixture(params=["aiohttp", "httpx"])
def http_client(request: pytest.FixtureRequest) -> str:
    if request.param == "aiohttp":
        pytest.importorskip("httpx_aiohttp")
    return request.param


def calls(server: ScriptedServer, http_client: str, count: int,
          **config: Any) -> list[str | LLMError]:
    """``count`` calls in turn through one client: each reply's text, or its error."""
    client = OpenAIClient(LLMConfig(provider="openai", model="m", base_url=server.base_url,
                                    timeout_s=20.0, max_retries=2, backoff_s=0.01,
                                    http_client=http_client, **config))
    return calls_in_turn(client, count, MESSAGES)


def test_an_endless_body_is_cut_off_and_the_client_goes_on(http_client: str) -> None:
    with ScriptedServer([flood(2000), "next reply"]) as server:
        first, second = calls(server, http_client, 2, max_reply_chars=1000)
        assert len(server.requests) == 2  # not retried: it would flood again
        assert server.flooded[0] < 50_000_000  # of 2,000 MB (what the socket buffers took)
    assert isinstance(first, LLMError) and first.kind == "malformed"
    limit = body_limit(1000)
    assert str(first) == (
        f"the reply from {server.base_url} passed {limit:,} bytes before it ended (the most "
        "a reply of llm.max_reply_chars=1,000 can take); lower llm.max_tokens or raise "
        "llm.max_reply_chars")
    assert second == "next reply"


def test_no_reply_cap_reads_the_whole_body(http_client: str) -> None:
    with ScriptedServer([flood(5), flood(5)]) as server:
        (only,) = calls(server, http_client, 1, max_reply_chars=None)
        assert server.flooded[0] == 5_000_000  # read to the end (then retried once)
    assert isinstance(only, LLMError) and "not valid JSON" in str(only)


def test_the_longest_reply_the_cap_allows_is_read_whole(http_client: str) -> None:
    """A reply of exactly llm.max_reply_chars characters that JSON escapes at their
    longest (beyond U+FFFF: two six-byte escapes each, 2.4 MB here) still arrives."""
    longest = "\U0001F600" * 200_000
    with ScriptedServer([longest]) as server:
        (only,) = calls(server, http_client, 1, max_reply_chars=200_000)
    assert only == longest
    assert body_limit(None) is None
