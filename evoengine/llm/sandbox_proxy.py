"""The metered model proxy: the only way sandboxed code reaches a language model.

Agent problems (``problems/agent``) evolve programs that call a model themselves.
The sandbox has no network, so the engine serves its configured model on a UNIX
socket in a fresh folder of its own, which both sandbox backends show read-only at
the same path (``HarnessJob.shared_dirs``). Each evaluation gets a session: a random
token that goes into its environment (``HarnessJob.env``) and attributes every call
to it, with its own cap on calls and tokens. Calls go through the engine's client
(a ``RecordingClient``, so they land in the run's ``llm_calls`` tagged with the step
that asked), and the session adds up tokens and cost for the run's budget. A token
stops working when its evaluation ends.

The wire protocol is the tiny HTTP/JSON one of ``sandbox/evo_llm.py`` (the client
the harness hands to the candidate): one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any

from evoengine.config.schema import RunConfig
from evoengine.errors import UserError
from evoengine.llm.recording import _CALL_STEP, CallLog, set_call_step
from evoengine.llm.types import Completion, LLMClient, LLMError

SOCKET_NAME = "llm.sock"
SOCKET_VAR = "EVOENGINE_LLM_SOCKET"  # the names sandbox/evo_llm.py reads
TOKEN_VAR = "EVOENGINE_LLM_TOKEN"
_MAX_REQUEST = 4 << 20
# Connections served at once (over all sessions; more are answered 503 at once) and
# the seconds a client may take to send its request: a sandbox that opens sockets and
# sends nothing must not pile up descriptors or buffers in the engine.
_MAX_CONNECTIONS = 64
_READ_TIMEOUT_S = 30.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            410: "Gone", 413: "Payload Too Large", 429: "Too Many Requests",
            502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class ProxySession:
    """One evaluation's use of the proxy: its token, its cap and what it spent."""

    token: str
    step: int | None
    max_calls: int
    max_tokens: int  # prompt + completion tokens over the session; 0: no cap
    calls: int = 0
    refused: int = 0  # calls turned away by the cap
    failed: int = 0  # calls the model failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    reserved: int = 0  # reply tokens promised to the calls in flight
    errors: list[str] = field(default_factory=list)
    pending: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)  # calls in flight

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def env(self, socket_path: str) -> tuple[tuple[str, str], ...]:
        return ((SOCKET_VAR, socket_path), (TOKEN_VAR, self.token))

    def metrics(self) -> dict[str, float]:
        """What an evaluation reports of its model use (stored with its metrics)."""
        return {"llm_calls": float(self.calls), "llm_tokens": float(self.tokens),
                "llm_cost": self.cost, "llm_refused": float(self.refused)}


class SandboxLLMProxy:
    """Serves ``client`` to sandboxed code on a UNIX socket; see the module docstring.

    ``await start()`` in the event loop that will serve it (``evaluate`` does it on
    first use), ``open_session`` / ``close_session`` around each sandbox run,
    ``await close()`` at the end.
    """

    def __init__(self, client: LLMClient, *, max_calls: int, max_tokens: int,
                 temperature: float, reply_tokens: int) -> None:
        self.client = client
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.reply_tokens = reply_tokens  # max_tokens of one call (the request may ask less)
        self.folder = ""
        self.socket_path = ""
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, ProxySession] = {}
        self._connections = 0
        self.read_timeout_s = _READ_TIMEOUT_S

    @property
    def model(self) -> str:
        return self.client.model

    async def start(self) -> None:
        """Listen (again, if the running loop is not the one we served before)."""
        loop = asyncio.get_running_loop()
        if self._server is not None and self._loop is loop:
            return
        await self._stop_server()
        if not self.folder:
            # Short path (UNIX socket paths are limited to 107 bytes), readable by the
            # sandbox user; the socket itself is world-connectable, the token guards it.
            self.folder = tempfile.mkdtemp(prefix="evo-llm-")
            os.chmod(self.folder, 0o755)
            # gone at exit even when nobody calls close() (evo eval, a crash)
            weakref.finalize(self, shutil.rmtree, self.folder, True)
            self.socket_path = os.path.join(self.folder, SOCKET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)
        os.chmod(self.socket_path, 0o666)
        self._loop = loop

    def open_session(self) -> ProxySession:
        """A new token for one sandbox run, tagged with the calling task's step."""
        session = ProxySession(token=secrets.token_hex(16), step=_CALL_STEP.get(),
                               max_calls=self.max_calls, max_tokens=self.max_tokens)
        self._sessions[session.token] = session
        return session

    def close_session(self, session: ProxySession) -> ProxySession:
        """Revoke the token and cancel its calls still in flight (their sandbox is
        gone; their usage could no longer be charged): the totals are final."""
        self._sessions.pop(session.token, None)
        for task in session.pending:
            task.cancel()
        return session

    async def _stop_server(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        await self._stop_server()
        self._sessions.clear()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = ""

    # ------------------------------------------------------------ serving

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        self._connections += 1
        try:
            if self._connections > _MAX_CONNECTIONS:
                status, body = 503, {"error": "busy", "message": "too many connections"}
            else:
                status, body = await self._answer(reader)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError, UnicodeDecodeError):
            status, body = 400, {"error": "bad_request", "message": "malformed request"}
        finally:
            self._connections -= 1
        payload = json.dumps(body).encode("utf-8")
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        async with asyncio.timeout(self.read_timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path = (lines[0].split(" ") + ["", ""])[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        length = int(headers.get("content-length", "0"))
        if length > _MAX_REQUEST:
            return 413, {"error": "bad_request", "message": "request too large"}
        async with asyncio.timeout(self.read_timeout_s):
            raw = await reader.readexactly(length)
        if method != "POST" or path != "/v1/complete":
            return 404, {"error": "bad_request", "message": "POST /v1/complete only"}
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        session = self._sessions.get(token)
        if session is None:
            return 401, {"error": "auth", "message": "unknown or expired token"}
        request = json.loads(raw)
        messages = request.get("messages") if isinstance(request, dict) else None
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages)):
            return 400, {"error": "bad_request",
                         "message": "messages must be a non-empty list of {role, content}"}
        refusal = self._over_cap(session)
        if refusal:
            session.refused += 1
            return 429, {"error": "cap", "message": refusal}
        session.calls += 1  # counted before the await: concurrent calls cannot overrun
        return await self._forward(session, messages, request)

    def _over_cap(self, session: ProxySession) -> str:
        if session.max_calls and session.calls >= session.max_calls:
            return f"this evaluation used its {session.max_calls} model calls"
        if session.max_tokens and session.tokens + session.reserved >= session.max_tokens:
            return (f"this evaluation used its {session.max_tokens} tokens (those of its "
                    "calls in flight included)")
        return ""

    async def _forward(self, session: ProxySession, messages: list[dict[str, str]],
                       request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        temperature = request.get("temperature", self.temperature)
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            temperature = self.temperature
        reply_tokens = request.get("max_tokens", self.reply_tokens)
        if not isinstance(reply_tokens, int) or reply_tokens < 1:
            reply_tokens = self.reply_tokens
        reply_tokens = min(reply_tokens, self.reply_tokens)
        if session.max_tokens:
            # The reply may not take the session past its cap, counting the replies
            # still in flight at their max_tokens: concurrent calls share what is left
            # instead of each taking all of it. (Only a prompt, whose size the model
            # tells afterwards, can still take the session past the cap.)
            room = session.max_tokens - session.tokens - session.reserved
            reply_tokens = max(1, min(reply_tokens, room))
            session.reserved += reply_tokens
        set_call_step(session.step)  # this connection's task: record under the step
        call = asyncio.ensure_future(self.client.complete(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            temperature=float(temperature), max_tokens=reply_tokens))
        session.pending.add(call)
        try:
            completion = await asyncio.shield(call)
        except asyncio.CancelledError:
            if not call.cancelled():  # the server itself is stopping
                call.cancel()
                raise
            return 410, {"error": "auth", "message": "the evaluation ended"}
        except LLMError as exc:
            session.failed += 1
            session.errors.append(f"{exc.kind}: {exc}"[:200])
            if exc.spent is not None:  # an unusable reply (over the cap) still cost
                _meter(session, exc.spent)
            return 502, {"error": exc.kind, "message": str(exc)[:500]}
        finally:
            session.pending.discard(call)
            if session.max_tokens:
                session.reserved -= reply_tokens
        _meter(session, completion)
        return 200, {"text": completion.text, "prompt_tokens": completion.prompt_tokens,
                     "completion_tokens": completion.completion_tokens}


def _meter(session: ProxySession, completion: Completion) -> None:
    """Count one reply's tokens and cost against its evaluation's session."""
    session.prompt_tokens += completion.prompt_tokens
    session.completion_tokens += completion.completion_tokens
    session.cost += completion.cost


class ModelRequired(UserError):
    """The problem's candidates call a model and the run has none configured."""


def proxy_for(config: RunConfig, mutator_name: str, call_log: CallLog | None
              ) -> tuple[SandboxLLMProxy | None, str]:
    """The run's model proxy (None when the problem serves no model to its
    candidates) and the line the run prints about it. ModelRequired, at once, when
    the problem needs a model (``requires_llm``) and the run resolved to ``gp``.
    Without ``call_log`` (``evo eval``) the calls are metered but not stored."""
    problem = config.problem
    if problem.requires_llm and mutator_name == "gp":
        raise ModelRequired(
            f"problem {problem.name!r} runs agents that call a language model, and none is "
            "configured: use llm=openai llm.base_url=http://HOST:PORT/v1 (any "
            f"OpenAI-compatible server) or set ${config.llm.api_key_env}")
    if problem.llm_calls_per_evaluation <= 0:
        return None, ""
    from evoengine.llm.factory import model_client

    proxy = SandboxLLMProxy(model_client(config.llm, call_log),
                            max_calls=problem.llm_calls_per_evaluation,
                            max_tokens=problem.llm_tokens_per_evaluation,
                            temperature=config.llm.temperature,
                            reply_tokens=config.llm.max_tokens)
    tokens = problem.llm_tokens_per_evaluation
    return proxy, (f"model proxy: candidates call {config.llm.model} through the engine, "
                   f"at most {problem.llm_calls_per_evaluation} calls"
                   + (f" and {tokens} tokens" if tokens else "") + " per evaluation")
