"""The model client a harness hands to sandboxed code: ``llm(prompt or messages) -> text``.

The sandbox has no network. The engine serves its configured model on a UNIX socket
(``evoengine/llm/sandbox_proxy.py``) whose folder the sandbox shows read-only, and
gives each evaluation the socket path and a token of its own in the environment
(``EVOENGINE_LLM_SOCKET``, ``EVOENGINE_LLM_TOKEN``). The engine meters every call
(tokens and cost go into the run's accounting) and refuses calls past the
evaluation's cap, which this client reports as :class:`LLMUnavailable`.

Protocol: one HTTP/1.1 request per connection, ``POST /v1/complete`` with
``Authorization: Bearer <token>`` and a JSON body ``{"messages": [...],
"temperature"?: float, "max_tokens"?: int}``; the answer is ``{"text",
"prompt_tokens", "completion_tokens"}`` (200) or ``{"error", "message"}``.

Stdlib only, no engine imports: the same file serves inside sandbox images.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

SOCKET_VAR = "EVOENGINE_LLM_SOCKET"
TOKEN_VAR = "EVOENGINE_LLM_TOKEN"
_MAX_REPLY = 16 << 20


class LLMUnavailable(RuntimeError):
    """The call failed: no proxy, the cap was reached, or the model failed.
    ``kind`` is the proxy's error kind (``cap``, ``auth``, ``bad_request``, or an
    LLM error kind such as ``timeout``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LLM:
    """Callable client: ``llm("prompt")`` or ``llm([{"role": ..., "content": ...}])``."""

    def __init__(self, socket_path: str, token: str, timeout_s: float = 600.0) -> None:
        self.socket_path = socket_path
        self._token = token
        self.timeout_s = timeout_s
        self.calls = 0

    def __call__(self, messages: str | list[dict[str, str]], **params: Any) -> str:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = {"messages": messages}
        body.update({k: v for k, v in params.items() if k in ("temperature", "max_tokens")})
        reply = self._post("/v1/complete", body)
        self.calls += 1
        return str(reply["text"])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode("utf-8")
        head = (f"POST {path} HTTP/1.1\r\nHost: evoengine\r\n"
                f"Authorization: Bearer {self._token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode("ascii")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout_s)
            try:
                conn.connect(self.socket_path)
                conn.sendall(head + payload)
                raw = _read_all(conn)
            except OSError as exc:
                raise LLMUnavailable("connection", f"model proxy unreachable: {exc}") from None
        header, _, data = raw.partition(b"\r\n\r\n")
        try:
            status = int(header.split(b" ", 2)[1])
            reply = json.loads(data)
        except (IndexError, ValueError) as exc:
            raise LLMUnavailable("malformed", f"model proxy sent a bad reply: {exc}") from None
        if status != 200 or not isinstance(reply, dict) or "text" not in reply:
            kind = str(reply.get("error", "server")) if isinstance(reply, dict) else "server"
            message = str(reply.get("message", "")) if isinstance(reply, dict) else ""
            raise LLMUnavailable(kind, f"model call refused ({status} {kind}): {message}")
        return reply


def _read_all(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while size <= _MAX_REPLY:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def connect(timeout_s: float = 600.0) -> LLM:
    """The client for this evaluation, from the environment the engine set;
    LLMUnavailable when the engine serves no model to this evaluation."""
    path, token = os.environ.get(SOCKET_VAR), os.environ.get(TOKEN_VAR)
    if not path or not token:
        raise LLMUnavailable("auth", "no model proxy for this evaluation "
                             f"(${SOCKET_VAR} / ${TOKEN_VAR} unset)")
    return LLM(path, token, timeout_s)
