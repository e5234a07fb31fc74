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
``{"malformed": "refusal"}``                200, null content with a ``refusal`` and a
                                           usage of 1,000 + 10 tokens
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
import socket
import threading
from collections.abc import Callable
from typing import Any

from evoengine.llm.scripted_handler import ScriptServer, StepHandler
from evoengine.llm.scripted_steps import drop, error, flood, malformed, reply

__all__ = ["ScriptedServer", "drop", "error", "flood", "malformed", "reply"]

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
        self._httpd: ScriptServer | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ScriptServer((self._host, self._port), StepHandler)
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
