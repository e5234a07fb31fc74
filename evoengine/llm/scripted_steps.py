"""The steps a :class:`~evoengine.llm.scripted_server.ScriptedServer` script is made
of: one per request, built by these helpers (a plain ``str`` is a normal reply).
See the server module's docstring for what each step makes the server do."""

from __future__ import annotations

from typing import Any

MALFORMED_KINDS = {"invalid_json", "no_choices", "empty_choices", "no_content", "not_json",
                   "refusal"}


def reply(text: str, *, prompt_tokens: int | None = None,
          completion_tokens: int | None = None, delay: float = 0.0,
          usage: bool = True, finish_reason: str = "stop") -> dict[str, Any]:
    """A normal (or, with ``delay``, slow) completion step."""
    step: dict[str, Any] = {"reply": text, "delay": delay, "usage": usage,
                            "finish_reason": finish_reason}
    if prompt_tokens is not None:
        step["prompt_tokens"] = prompt_tokens
    if completion_tokens is not None:
        step["completion_tokens"] = completion_tokens
    return step


def error(status: int, *, retry_after: float | str | None = None, message: str | None = None,
          code: str | None = None, type: str | None = None, param: str | None = None,
          delay: float = 0.0) -> dict[str, Any]:
    """An HTTP error step with an OpenAI-shaped error body."""
    step: dict[str, Any] = {"status": status, "delay": delay}
    for key, value in (("retry_after", retry_after), ("message", message), ("code", code),
                       ("type", type), ("param", param)):
        if value is not None:
            step[key] = value
    return step


def malformed(kind: str = "no_choices") -> dict[str, Any]:
    """A 200 reply the client cannot use; see the module docstring for the kinds."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; choose one of "
                         + ", ".join(sorted(MALFORMED_KINDS)))
    return {"malformed": kind}


def flood(megabytes: float) -> dict[str, Any]:
    """A 200 reply whose body goes on for ``megabytes`` MB (sent until then, or until the
    client hangs up): a server that streams without end."""
    return {"flood": megabytes}


def drop() -> dict[str, Any]:
    """Close the connection without sending a response."""
    return {"drop": True}
