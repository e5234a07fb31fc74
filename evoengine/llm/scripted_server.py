"""A scripted HTTP server that speaks the OpenAI chat-completions protocol.

This is a test double: it stands in for a real model server (OpenAI, vLLM, Ollama,
...), which cannot be reached from the test and benchmark machines. It listens on
127.0.0.1 on a free port, so the real ``openai`` SDK (and with it
:class:`~evoengine.llm.openai_client.OpenAIClient`) can be exercised end to end over
real sockets: retries, timeouts, dropped connections and error bodies included.

Usage::

    with ScriptedServer([error(429, retry_after=0.1), reply("def f(): ...")]) as server:
        client = OpenAIClient(LLMConfig(base_url=server.base_url, model=server.model))
        ...
        assert len(server.requests) == 2

Routes: ``POST /v1/chat/completions`` answers with the next step of the script;
``GET /v1/models`` lists ``server.model``. Anything else is a 404 in OpenAI's error
shape.

Script
------
``script`` is either a list of steps, consumed one per chat-completions request, or
a callable ``(request_json) -> step`` called for every request (unbounded use, e.g.
benchmarks). When a list runs out the server answers HTTP 500 with the message
``scripted server: script exhausted ...`` so that a test asking for more than it
scripted fails loudly instead of hanging.

A step is a ``str`` (a normal reply with that text) or a ``dict``; the helpers
:func:`reply`, :func:`error`, :func:`malformed` and :func:`drop` build the dicts:

=========================================  =============================================
step                                       what the server does
=========================================  =============================================
``{"reply": text}``                        200 with a chat completion whose message is
                                           ``text``; optional ``"prompt_tokens"``,
                                           ``"completion_tokens"`` (default: word counts
                                           of the request messages and of ``text``),
                                           ``"usage": False`` (omit the usage object)
                                           or a dict (sent as the usage object as is),
                                           ``"finish_reason"`` (default ``"stop"``)
``{"reply": text, "delay": s}``             a slow reply: waits ``s`` seconds first
``{"status": 429, "retry_after": s}``       an HTTP error in OpenAI's error JSON shape
                                           (``{"error": {message, type, param, code}}``)
                                           with a fitting default message/type/code for
                                           401, 403, 404 (``model_not_found``), 429,
                                           500, 503; optional ``"message"``, ``"type"``,
                                           ``"code"``, ``"param"``, ``"retry_after"``
                                           (sets the ``Retry-After`` header), ``"delay"``
``{"malformed": "invalid_json"}``           200, ``application/json``, a truncated body
``{"malformed": "no_choices"}``             200, a JSON object without ``choices``
``{"malformed": "empty_choices"}``          200, ``"choices": []``
``{"malformed": "no_content"}``             200, a choice whose message content is null
``{"malformed": "not_json"}``               200, ``text/html`` body
``{"flood": mb}``                           200, ``application/json``, a body of ``mb`` MB
                                           with no length, sent until then or until the
                                           client hangs up (``server.flooded``: the bytes
                                           each such reply got out)
``{"drop": True}``                          closes the socket without any response
=========================================  =============================================

``server.requests`` holds the parsed JSON body of every chat-completions request
received (in order, failed steps included) and ``server.request_headers`` the
matching headers (lower-cased names). ``stop()`` (also on leaving the ``with``
block) shuts the listener down, wakes any delayed step, closes open connections and
joins the serving thread; it never waits on a client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evoengine.llm.scripted_steps import drop, error, flood, malformed, reply

__all__ = ["ScriptedServer", "drop", "error", "flood", "malformed", "reply"]

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    owner: ScriptedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers (and httpx's pool)
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

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


class ScriptedServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that plays a script.

    A test double standing in for a real model, which cannot be reached here; see the
    module docstring for the step format.
    """

    def __init__(self, script: Any = (), *, model: str = "scripted-model",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if callable(script):
            self._script_fn: Callable[[dict[str, Any]], Any] | None = script
            self._steps: list[Any] = []
        else:
            self._script_fn = None
            self._steps = list(script)
        self.model = model
        self.requests: list[Any] = []
        self.flooded: list[int] = []  # bytes each ``flood`` step got out
        self.request_headers: list[dict[str, str]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._host = host
        self._port = port
        self._httpd: _Server | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server((self._host, self._port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._bound_port = int(httpd.server_address[1])
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02},
                                        name="scripted-openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # unblock handler threads waiting on keep-alive reads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- info -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (still known after ``stop()``, e.g. to test a refused connection)."""
        if self._bound_port is None:
            raise RuntimeError("scripted server was never started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def remaining(self) -> int:
        """Scripted steps not yet played (0 for a callable script)."""
        with self._lock:
            return len(self._steps)

    # -- internals ------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _next_step(self, body: Any, headers: dict[str, str]) -> Any:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self._count += 1
            if self._script_fn is None:
                if self._steps:
                    return self._steps.pop(0)
                return {"status": 500, "message": "scripted server: script exhausted after "
                        f"{self._count - 1} requests", "type": "server_error"}
        try:
            return self._script_fn(body if isinstance(body, dict) else {})
        except Exception as exc:  # a broken script must not kill the handler thread
            return {"status": 500, "message": f"scripted server: script raised {exc!r}",
                    "type": "server_error"}
