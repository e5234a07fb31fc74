"""How a :class:`~evoengine.llm.scripted_server.ScriptedServer` answers one request:
the HTTP handler that routes it, takes the next step of the script and plays that step
on the wire (a completion, an error body, a malformed or endless reply, a dropped
socket). The step format is in the server module's docstring."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evoengine.llm.scripted_server import ScriptedServer

_ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid request", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error",
          "permission_denied"),
    404: ("The model '{model}' does not exist or you do not have access to it.",
          "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error",
          None),
}


def _words(text: object) -> int:
    return len(str(text).split()) if text is not None else 0


class ScriptServer(ThreadingHTTPServer):
    """The listener; ``owner`` is the ScriptedServer whose script it plays."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    owner: ScriptedServer


class StepHandler(BaseHTTPRequestHandler):
    """One connection: each chat-completions request plays the script's next step."""

    protocol_version = "HTTP/1.1"  # keep-alive, like real servers (and httpx's pool)
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: ScriptServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    # -- routes ---------------------------------------------------------------------

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": owner.model, "object": "model", "created": 0,
                 "owned_by": "scripted"}]})
        else:
            self._send_error_body(404, f"no route GET {self.path}", "invalid_request_error",
                                  None, None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error_body(404, f"no route POST {self.path}", "invalid_request_error",
                                  None, None)
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send_error_body(400, "request body is not JSON", "invalid_request_error",
                                  None, None)
            return
        owner = self.server.owner
        step = owner._next_step(body, {k.lower(): v for k, v in self.headers.items()})
        self._play(step, body if isinstance(body, dict) else {})

    # -- steps ----------------------------------------------------------------------

    def _play(self, step: str | dict[str, Any], body: dict[str, Any]) -> None:
        owner = self.server.owner
        if isinstance(step, str):
            step = {"reply": step}
        if not isinstance(step, dict):
            self._send_error_body(500, f"scripted server: bad step {step!r}", "server_error",
                                  None, None)
            return
        delay = float(step.get("delay") or 0.0)
        if delay > 0 and owner._stopping.wait(delay):
            self._drop()  # shutting down: do not keep the client (or the test) waiting
            return
        if step.get("drop"):
            self._drop()
        elif "status" in step:
            self._play_error(step, body)
        elif "malformed" in step:
            self._play_malformed(str(step["malformed"]))
        elif "flood" in step:
            self._flood(int(float(step["flood"]) * 1_000_000))
        elif "reply" in step:
            self._send_json(200, self._completion(step, body))
        else:
            self._send_error_body(500, f"scripted server: bad step {step!r}", "server_error",
                                  None, None)

    def _completion(self, step: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        owner = self.server.owner
        text = str(step["reply"])
        messages = body.get("messages") or []
        prompt_tokens = step.get("prompt_tokens")
        if prompt_tokens is None:
            prompt_tokens = sum(_words(m.get("content")) for m in messages
                                if isinstance(m, dict))
        completion_tokens = step.get("completion_tokens")
        if completion_tokens is None:
            completion_tokens = _words(text)
        n = owner._count
        payload: dict[str, Any] = {
            "id": f"chatcmpl-scripted-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or owner.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": step.get("finish_reason", "stop"),
            }],
        }
        usage = step.get("usage", True)
        if isinstance(usage, dict):  # sent as given, however odd
            payload["usage"] = usage
        elif usage:
            payload["usage"] = {"prompt_tokens": int(prompt_tokens),
                                "completion_tokens": int(completion_tokens),
                                "total_tokens": int(prompt_tokens) + int(completion_tokens)}
        return payload

    def _play_error(self, step: dict[str, Any], body: dict[str, Any]) -> None:
        status = int(step["status"])
        message, type_, code = _ERROR_DEFAULTS.get(
            status, (f"scripted HTTP {status}", "invalid_request_error", None))
        message = str(step.get("message", message)).format(
            model=body.get("model") or self.server.owner.model)
        headers = {}
        if step.get("retry_after") is not None:
            headers["Retry-After"] = str(step["retry_after"])
        self._send_error_body(status, message, step.get("type", type_), step.get("code", code),
                              step.get("param"), headers)

    def _play_malformed(self, kind: str) -> None:
        if kind == "invalid_json":
            self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"mess',
                           "application/json")
        elif kind == "not_json":
            self._send_raw(200, b"<html><body>502 upstream gone</body></html>", "text/html")
        elif kind == "no_choices":
            self._send_json(200, {"id": "chatcmpl-nochoices", "object": "chat.completion",
                                  "created": int(time.time()), "model": "scripted"})
        elif kind == "empty_choices":
            self._send_json(200, {"id": "chatcmpl-empty", "object": "chat.completion",
                                  "created": int(time.time()), "model": "scripted",
                                  "choices": []})
        elif kind == "no_content":
            self._send_json(200, {"id": "chatcmpl-nocontent", "object": "chat.completion",
                                  "created": int(time.time()), "model": "scripted",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant",
                                                           "content": None}}]})
        elif kind == "refusal":  # billed like any reply: it has usage
            self._send_json(200, {"id": "chatcmpl-refusal", "object": "chat.completion",
                                  "created": int(time.time()), "model": "scripted",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant",
                                                           "content": None,
                                                           "refusal": "I can't help"}}],
                                  "usage": {"prompt_tokens": 1000, "completion_tokens": 10,
                                            "total_tokens": 1010}})
        else:
            self._send_error_body(500, f"scripted server: unknown malformed kind {kind!r}",
                                  "server_error", None, None)

    def _flood(self, size: int) -> None:
        """Send ``size`` bytes of a JSON-looking body with no length (it ends when the
        connection closes); stop early when the client hangs up."""
        chunk = b" " * 65536
        sent = 0
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"choices": [{"message": {"content": "')
            while sent < size:
                self.wfile.write(chunk[: size - sent])
                sent += min(len(chunk), size - sent)
            self.wfile.flush()
        except OSError:
            pass  # the client hung up, as it should
        with self.server.owner._lock:
            self.server.owner.flooded.append(sent)

    # -- wire -----------------------------------------------------------------------

    def _send_error_body(self, status: int, message: str, type_: str | None,
                         code: str | None, param: str | None,
                         headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": type_,
                                           "param": param, "code": code}}, headers)

    def _send_json(self, status: int, payload: object,
                   headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(self, status: int, data: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
