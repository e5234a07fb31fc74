"""Record every model call, and replay a recorded run with no model (``llm.replay``).

Recording. :class:`RecordingClient` wraps any :class:`~evoengine.llm.types.LLMClient`
and writes each call to the run's ``llm_calls`` table as soon as it returns: the request
(model, messages, temperature, max_tokens, seed), the sha256 of its canonical JSON, the
reply text with its tokens, cost and latency, or the ``LLMError`` kind and message (with
the kept start, tokens and cost of a reply that came back unusable: ``LLMError.spent``,
replayed with the error). Each call is its own transaction, not part of its step's: a
run killed mid-step keeps the calls of that step, tagged with the step and the run's
*session* (0 for ``evo run``, one more per ``evo resume``). The controller tags calls
with their step through :func:`set_call_step`.

Replay. :class:`ReplayClient` answers from a recorded run instead of a model: a
request gets the recorded answer of the same request at the same step (the n-th
identical request of a step gets the n-th recorded answer, so repeats replay in
order), with the recorded tokens, cost and latency; a recorded ``LLMError`` is raised
again with its kind and message. When a step was asked in several sessions (the run
was killed during it and resumed), the last session's answers count: those are the
ones the archive kept. A request with no recorded answer raises ``LLMError("replay")``
(the controller stops the run on it): the config, the problem or the prompt templates
changed since the recording.

Replay is exact when the recorded run was: ``search.llm_concurrency=1`` and
``search.eval_concurrency=1`` (steps in order), the same config, seed, problem and
templates, evaluation that gives the same result and feedback text each time (the
feedback goes into the next prompts), no wall-time budget, and a resumed recording
replayed with the same resumes (a run that ends validates its best program).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, inspect, make_url, select
from sqlalchemy.exc import SQLAlchemyError

from evoengine.archive.models import LLMCall
from evoengine.archive.store import ArchiveStore, StoreError, sqlite_url
from evoengine.llm.types import Completion, LLMClient, LLMError
from evoengine.paths import ARCHIVE_FILE

_CALL_STEP: ContextVar[int | None] = ContextVar("evoengine_llm_call_step", default=None)


def set_call_step(step: int | None) -> None:
    """Tag the model calls made from here on, in this asyncio task, with ``step``."""
    _CALL_STEP.set(step)


def make_request(model: str, messages: list[dict[str, str]], temperature: float,
                 max_tokens: int, seed: int | None) -> dict[str, Any]:
    """What a call asks, as stored (a copy: the caller may extend ``messages`` later)."""
    return {"model": model, "messages": [dict(m) for m in messages],
            "temperature": temperature, "max_tokens": max_tokens, "seed": seed}


def request_hash(request: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CallLog:
    """Where :class:`RecordingClient` writes: the run's store, bound once it exists
    (the mutator is built before the run's database, so bad input stores nothing)."""

    def __init__(self) -> None:
        self.store: ArchiveStore | None = None
        self.session = 0

    def bind(self, store: ArchiveStore) -> None:
        self.store = store
        self.session = store.next_llm_session()

    def record(self, request: dict[str, Any], *, completion: Completion | None = None,
               error: LLMError | None = None, latency_s: float = 0.0) -> None:
        if self.store is None:
            raise RuntimeError("CallLog.record before bind(store)")
        values: dict[str, Any] = dict(
            session=self.session, step=_CALL_STEP.get(), model=request["model"],
            request=request, request_hash=request_hash(request), response="",
            prompt_tokens=0, completion_tokens=0, cost=0.0, latency_s=latency_s,
            error_kind=None, error_message="")
        if completion is not None:
            values.update(response=completion.text, prompt_tokens=completion.prompt_tokens,
                          completion_tokens=completion.completion_tokens,
                          cost=completion.cost, latency_s=completion.latency_s)
        if error is not None:
            values.update(error_kind=error.kind, error_message=str(error))
        self.store.record_llm_call(values)


class RecordingClient:
    """An ``LLMClient`` that stores every call of ``inner`` (answers and LLMErrors)."""

    def __init__(self, inner: LLMClient, log: CallLog) -> None:
        self.inner = inner
        self.log = log
        self.model = inner.model

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        request = make_request(self.model, messages, temperature, max_tokens, seed)
        started = time.perf_counter()
        try:
            completion = await self.inner.complete(messages, temperature=temperature,
                                                   max_tokens=max_tokens, seed=seed)
        except LLMError as exc:
            if exc.latency_s is None:  # (a replayed error has the recorded one)
                exc.latency_s = time.perf_counter() - started
            latency_s = exc.latency_s
            # a reply that came back unusable keeps its start, tokens and cost
            self.log.record(request, completion=exc.spent, error=exc, latency_s=latency_s)
            raise
        self.log.record(request, completion=completion)
        return completion

    async def close(self) -> None:
        await self.inner.close()


def replay_label(source: str) -> str:
    """``source`` as messages show it: a database URL without its password."""
    if "://" not in source:
        return source
    url, hash_mark, name = source.partition("#")
    try:
        return make_url(url).render_as_string(hide_password=True) + hash_mark + name
    except Exception:  # not a URL SQLAlchemy can parse: say so without echoing it
        return "<database URL>"


def open_recording(source: str) -> tuple[ArchiveStore, dict[str, Any]]:
    """The recorded run in ``source``: a run folder, its archive.db, or a database URL
    (``URL#run-name`` where it holds several runs), and the config it ran with. Reads
    only: the source's tables are neither created nor changed."""
    name: str | None = None
    label = replay_label(source)
    if "://" in source:
        url, _, fragment = source.partition("#")
        name = fragment or None
        database = make_url(url).database if url.startswith("sqlite") else None
        if database and database != ":memory:" and not Path(database).is_file():
            raise LLMError("replay", f"llm.replay: {label} does not exist")
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / ARCHIVE_FILE
        if not path.is_file():
            raise LLMError("replay", f"llm.replay: {source} holds no {ARCHIVE_FILE}; give "
                           "the folder of a recorded run (see runs/) or a database URL")
        url = sqlite_url(path)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        if "runs" not in tables:
            raise LLMError("replay", f"llm.replay: {label} holds no evoengine run")
        store, run = ArchiveStore.open_run(engine, name)
        calls = 0
        if LLMCall.__tablename__ in tables:
            with engine.connect() as conn:
                calls = int(conn.execute(select(func.count(LLMCall.id)).where(
                    LLMCall.run_id == store.run_id)).scalar() or 0)
    except StoreError as exc:
        engine.dispose()
        hint = "; name it as URL#run-name" if "several runs" in str(exc) else ""
        raise LLMError("replay", f"llm.replay: {label}: {str(exc).split(';')[0]}{hint}"
                       ) from None
    except SQLAlchemyError as exc:
        engine.dispose()
        message = " ".join(str(exc).split())[:200]
        raise LLMError("replay", f"llm.replay: cannot read {label}: {message}") from None
    except LLMError:
        engine.dispose()
        raise
    if calls == 0:
        engine.dispose()
        raise LLMError("replay", f"llm.replay: run {run.name!r} in {label} recorded no "
                       "model calls (it ran the offline GP mutator, or predates "
                       "recording); there is nothing to replay")
    return store, dict(run.config or {})


class ReplayClient:
    """An ``LLMClient`` that answers with the calls recorded in a run; see the module
    docstring. ``model`` is the model the requests name (part of the request hash)."""

    def __init__(self, source: str, model: str) -> None:
        self.source = replay_label(source)
        self.model = model
        # (the full source: it may need a password)
        self._store, self._recorded_config = open_recording(source)
        self._served: Counter[tuple[int | None, str]] = Counter()

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        request = make_request(self.model, messages, temperature, max_tokens, seed)
        digest = request_hash(request)
        step = _CALL_STEP.get()
        answers = _last_session(
            [row for row in self._store.llm_calls(digest) if row["step"] == step])
        served = self._served[(step, digest)]
        if served >= len(answers):
            where = f"at step {step}" if step is not None else "outside a step"
            what = (f"answers this request {where} only {len(answers)} time(s)" if answers
                    else f"has no answer to this request {where}")
            raise LLMError("replay", f"replay of {self.source}: the recording {what} "
                           f"(request {digest[:12]}); {self._why_not_replayable(step)}")
        self._served[(step, digest)] = served + 1
        row = answers[served]
        recorded = Completion(text=row["response"], model=self.model,
                              prompt_tokens=int(row["prompt_tokens"]),
                              completion_tokens=int(row["completion_tokens"]),
                              latency_s=float(row["latency_s"]), cost=float(row["cost"]))
        if row["error_kind"]:
            spent = recorded.text or recorded.prompt_tokens or recorded.completion_tokens \
                or recorded.cost
            failure = LLMError(str(row["error_kind"]), str(row["error_message"]),
                               spent=recorded if spent else None)
            failure.latency_s = recorded.latency_s
            raise failure
        return recorded

    async def close(self) -> None:
        self._store.engine.dispose()

    def _why_not_replayable(self, step: int | None) -> str:
        search = self._recorded_config.get("search") or {}
        concurrency = max(int(search.get("llm_concurrency") or 1),
                          int(search.get("eval_concurrency") or 1))
        if concurrency > 1 and not search.get("deterministic"):
            return (f"the recording ran {concurrency} steps at once without "
                    "search.deterministic=true, so which archive each step saw depended on "
                    "timing; record with search.deterministic=true (or concurrencies of 1) "
                    "and replay with the same settings")
        last = self._store.last_llm_call_step()
        if step is not None and last is not None and step > last:
            budget = search.get("max_evaluations")
            recorded = f", {budget}" if budget is not None else ""
            return (f"the recording ends at step {last}: a replay cannot go past it (give "
                    f"search.max_evaluations no larger than the recorded run's{recorded})")
        return ("the config or code changed since the recording (replay needs the same "
                "config, seed, problem and prompt templates)")


def _last_session(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the last session among ``rows`` (in the order they were recorded)."""
    if not rows:
        return rows
    last = max(int(row["session"]) for row in rows)
    return [row for row in rows if int(row["session"]) == last]
