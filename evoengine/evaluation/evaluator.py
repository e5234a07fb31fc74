"""Evaluate a candidate: untrusted run in the sandbox, trusted score on the host.

One evaluation is one or more stages (``cascade.py``); each stage runs the candidate
on the first N instances and, for hidden-test problems, the grader on its raw output
(``grading.py``), then scores on the host. Candidates that call a model get a session
of the metered proxy (``evoengine/llm/sandbox_proxy.py``) for each sandbox run; what
they spent is reported in the metrics ``llm_calls``, ``llm_tokens``, ``llm_cost`` and
``llm_refused`` (summed over the stages), which the controller adds to the run's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import numbers
import time
from typing import Any

from evoengine.archive.storable import storable_text
from evoengine.errors import UserError
from evoengine.evaluation.cascade import Stage, passes, plan_stages
from evoengine.evaluation.daemon_threads import DaemonThreads
from evoengine.evaluation.grading import EvaluationJobs, output_module
from evoengine.evaluation.problem import Problem, describe_error
from evoengine.evaluation.result import ErrorKind, EvaluationResult
from evoengine.evaluation.sandbox.base import HarnessJob, Limits, RawOutput, SandboxBackend
from evoengine.evaluation.scoring import InvalidOutput, ScoreResult
from evoengine.llm.sandbox_proxy import ProxySession, SandboxLLMProxy

CODE_LENGTH = "code_length"
LLM_COST = "llm_cost"  # the metric the controller adds to the run's cost
# Feedback goes into the archive and into the next prompts; a scorer's message or a
# candidate's output tail must not grow them without bound. Head and tail are kept.
MAX_FEEDBACK_CHARS = 8000


class Evaluator:
    """Runs candidates of one problem through a sandbox backend and scores them."""

    def __init__(self, problem: Problem, backend: SandboxBackend, limits: Limits,
                 proxy: SandboxLLMProxy | None = None) -> None:
        self.problem = problem
        self.backend = backend
        self.limits = limits
        self.proxy = proxy
        self.jobs = EvaluationJobs(problem)
        self._score_threads = DaemonThreads("evo-score")

    async def evaluate(self, code: str, split: str = "train") -> EvaluationResult:
        total = len(self.problem.instances(split))
        stages = (plan_stages(self.problem.config.cascade, total) if split == "train"
                  else [Stage(total)])
        session = await self.open_session()  # one cap for the whole evaluation
        try:
            result = await self._run_stages(code, split, stages, total, session)
        finally:
            if session is not None and self.proxy is not None:
                self.proxy.close_session(session)
        if session is not None:
            result.metrics = {**result.metrics, **session.metrics()}
        # as the archive will store it, so a resumed run's prompts see the same text
        result.feedback = storable_text(bounded_feedback(result.feedback))
        return result

    async def _run_stages(self, code: str, split: str, stages: list[Stage], total: int,
                          session: ProxySession | None) -> EvaluationResult:
        result = EvaluationResult(valid=False)
        for index, stage in enumerate(stages):
            result = await self._evaluate_stage(code, split, stage.count, session)
            result.stage = index
            if not result.valid or index == len(stages) - 1:
                break
            assert result.score is not None
            if not passes(result.score, stage):
                result.feedback = (f"cascade: stopped after stage {index + 1} of "
                                   f"{len(stages)} ({stage.count} of {total} instances): "
                                   f"score {result.score:.4g} < threshold "
                                   f"{stage.threshold:g}\n{result.feedback}")
                break
        return result

    async def open_session(self) -> ProxySession | None:
        """A fresh proxy session (token and cap), or None without a proxy; the
        caller closes it with ``proxy.close_session``."""
        if self.proxy is None:
            return None
        await self.proxy.start()
        return self.proxy.open_session()

    async def run_with_model(self, code: str, job: HarnessJob, limits: Limits,
                             session: ProxySession | None) -> RawOutput:
        """Run ``job`` on ``code``; with a session, the sandbox sees the proxy's
        socket folder (read-only) and the session's token in its environment."""
        if session is not None and self.proxy is not None:
            job = dataclasses.replace(job, env=(*job.env, *session.env(self.proxy.socket_path)),
                                      shared_dirs=(*job.shared_dirs, self.proxy.folder))
        return await self.backend.run(code, job, limits)

    async def _evaluate_stage(self, code: str, split: str, count: int,
                              session: ProxySession | None) -> EvaluationResult:
        raw = await self.run_with_model(code, self.jobs.candidate(split, count),
                                        self.limits, session)
        if not raw.ok:
            return _failure(raw)
        output: Any = raw.output
        cpu_s = raw.cpu_s
        if self.jobs.graded:
            graded = await self.backend.run(output_module(output),
                                            self.jobs.grader(split, count), self.limits)
            if not graded.ok:
                graded.message = f"grader: {graded.message}"
                return _failure(graded, raw.wall_s, raw.cpu_s)
            output, cpu_s = graded.output, cpu_s + graded.cpu_s
        started = time.process_time()
        try:
            scored = await self._score(output, self.jobs.instances(split, count))
            metrics, scored_features = _checked(scored)
        except InvalidOutput as exc:
            return _invalid(str(exc), raw)
        except ScorerTimeout:
            raise
        except ScoreContractError as exc:  # what score() returned: the message says it
            return _invalid(f"the scorer rejected it (TypeError: {exc})", raw)
        except Exception as exc:  # the raw output broke the scorer: still the candidate's
            # (with score.py's line, so that a scorer's own bug can be told from bad output)
            where = describe_error(exc, self.problem.folder)
            return _invalid(f"the scorer rejected it ({where})", raw)
        features = {CODE_LENGTH: float(len(code)), **scored_features}
        feedback = scored.feedback
        if raw.stderr_tail:
            feedback += "\n--- output tail ---\n" + raw.stderr_tail
        return EvaluationResult(valid=True, score=float(scored.score), metrics=metrics,
                                features=features, feedback=feedback, wall_s=raw.wall_s,
                                cpu_s=cpu_s + (time.process_time() - started))

    async def _score(self, output: Any, instances: list[Any]) -> Any:
        """score.py's ``score()`` off the event loop, on a daemon thread
        (``daemon_threads.py``), within ``problem.score_timeout_s``: ScorerTimeout past
        it. A thread cannot be killed, so one that never returns is left behind; being
        a daemon, it holds up neither Ctrl-C nor the exit (the default executor's
        threads are joined at exit, and a stuck scorer hung the run for good)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            try:
                settle = (_resolve, future, self.problem.scorer.score(output, instances))
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting step
                settle = (_reject, future, exc)
            except BaseException as exc:  # noqa: BLE001 - sys.exit() in the scorer: not
                settle = (_reject, future, RuntimeError(  # the engine's own exit
                    f"score() raised {type(exc).__name__}"))
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(*settle)

        self._score_threads.submit(work)
        limit = self.problem.config.score_timeout_s
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:
            raise ScorerTimeout(
                f"{self.problem.folder}/{self.problem.config.scorer}: score() has not "
                f"returned after {limit:g} s (problem.score_timeout_s); fix the scorer, "
                "or raise problem.score_timeout_s if it is just slow") from None


class ScorerTimeout(UserError):
    """The problem's own scorer did not return in time: the problem's fault, not the
    candidate's, so the run stops (every later child would wait as long)."""


class ScoreContractError(TypeError):
    """What ``score()`` returned is not what the contract asks (``_checked``)."""


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # not cancelled (the step was dropped, or timed out)
        future.set_result(value)


def _reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _invalid(reason: str, raw: RawOutput) -> EvaluationResult:
    return EvaluationResult.failure(ErrorKind.INVALID_OUTPUT, f"invalid output: {reason}",
                                    raw.wall_s, raw.cpu_s)


def _failure(raw: RawOutput, wall_s: float = 0.0, cpu_s: float = 0.0) -> EvaluationResult:
    feedback = raw.message
    if raw.stderr_tail:
        feedback += "\n--- output tail ---\n" + raw.stderr_tail
    return EvaluationResult.failure(raw.error or ErrorKind.CRASH, feedback,
                                    wall_s + raw.wall_s, cpu_s + raw.cpu_s)


def bounded_feedback(text: str, limit: int = MAX_FEEDBACK_CHARS) -> str:
    """``text``, or its head and tail around a note of what was cut when too long."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return (f"{text[:half]}\n[... {len(text) - 2 * half} characters of feedback cut ...]\n"
            f"{text[-half:]}")


def _checked(scored: object) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The metrics and features of a ScoreResult as the archive stores them (JSON on
    any database): numbers as floats, numpy's included (an ``int64`` used to stop the
    run when stored), NaN and infinities as None (PostgreSQL's JSON takes neither);
    text stays text in metrics. ScoreContractError for anything else (a scorer's bug)."""
    if not isinstance(scored, ScoreResult):
        raise ScoreContractError("score() must return a ScoreResult")
    if not isinstance(scored.score, (int, float)) or not math.isfinite(scored.score):
        raise InvalidOutput(f"score {scored.score!r} is not a finite number")
    if not isinstance(scored.feedback, str):
        raise ScoreContractError(f"score() gave feedback as {type(scored.feedback).__name__}; give "
                        "a string")
    return (_plain(scored.metrics, "metrics", text=True),
            _plain(scored.features, "features", text=False))


def _plain(values: object, what: str, text: bool) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ScoreContractError(f"score() gave {what} as {type(values).__name__}; give a dict of "
                        "names to numbers")
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ScoreContractError(f"score() gave a {what} name {key!r}; names must be strings")
        if isinstance(value, numbers.Real):
            number = float(value)
            plain[key] = number if math.isfinite(number) else None
        elif text and isinstance(value, str):
            plain[key] = value
        else:
            raise ScoreContractError(f"score() gave {what}[{key!r}] as {type(value).__name__}; "
                            "give a number")
    return plain
