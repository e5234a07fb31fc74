"""Record and replay: every model call is stored, and `llm.replay=<run>` re-runs a
recorded run exactly with no model.

The scripted server (evoengine.llm.scripted_server) is a test double standing in for a
model, which cannot be reached here; the recording run talks to it through the real
`openai` SDK. The replays run with the server stopped and no base URL or key set.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.config.llm_schema import LLMConfig
from evoengine.config.schema import ProblemConfig
from evoengine.llm.factory import make_mutator
from evoengine.llm.recording import CallLog, RecordingClient, ReplayClient, set_call_step
from evoengine.llm.reply_guard import ReplyGuard
from evoengine.llm.scripted_server import ScriptedServer, error, malformed
from evoengine.llm.types import Completion, LLMError
from tests.conftest import archive_rows, evo_command, program_signature
from tests.test_llm_run import _diff, _full

COMMON = ["problem=bin_packing_quick", "llm=openai", "ui=plain", "sandbox=process",
          "search.num_islands=2", "search.llm_concurrency=1", "search.eval_concurrency=1",
          "llm.backoff_s=0.01", "llm.max_retries=1", "llm.timeout_s=5",
          "llm.price_input_per_mtok=1.0", "llm.price_output_per_mtok=2.0",
          "search.max_evaluations=15"]
UNMATCHED = ("<<<<<<< SEARCH\n    return bins  # not in the program\n=======\n"
             "    return -bins\n>>>>>>> REPLACE\n")
CRASH = ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
         "    raise ValueError('no idea')\n# EVOLVE-BLOCK-END\n```")


def _script(hang_after: int | None = None) -> Callable[[dict], dict | str]:
    """Valid diffs and rewrites, a crashing rewrite, unmatched diffs (the model is asked
    again), HTTP 500s and malformed replies. With ``hang_after``, the first retry after
    an unmatched diff from that request on hangs for a minute (once)."""
    counter = itertools.count()
    hang = [hang_after is not None]

    def script(request: dict) -> dict | str:
        n = next(counter)
        prompt = request["messages"][-1]["content"]
        if "could not be applied" in prompt:  # the retry after an unmatched SEARCH
            if hang[0] and n >= (hang_after or 0):
                hang[0] = False
                return {"reply": _diff(n), "delay": 60}
            return _diff(n) if n % 2 else UNMATCHED
        if "<<<<<<< SEARCH" in prompt:  # a diff prompt
            steps = [_diff(n), UNMATCHED, error(500), error(500), malformed("no_choices"),
                     _diff(n + 100)]
            return steps[n % len(steps)]
        return [_full(n % 5 + 2), CRASH, _full(n % 3 + 2)][n % 3]

    return script


def _mutation_calls(db: Path) -> list[tuple]:
    return archive_rows(db, """
        SELECT step, parent_id, program_id, outcome, operator, model, edit, prompt, response,
               prompt_tokens, completion_tokens, cost, latency_s
        FROM mutation_calls ORDER BY id""")


def _llm_calls(db: Path, where: str = "") -> list[tuple]:
    return archive_rows(db, f"""
        SELECT step, model, request, request_hash, response, prompt_tokens,
               completion_tokens, cost, latency_s, error_kind, error_message
        FROM llm_calls {where} ORDER BY id""")


def _assert_same_run(original: Path, replayed: Path) -> None:
    assert program_signature(replayed) == program_signature(original)
    assert _mutation_calls(replayed) == _mutation_calls(original)
    assert archive_rows(replayed, "SELECT cost FROM runs") == archive_rows(
        original, "SELECT cost FROM runs")
    assert (replayed.parent / "best_program.py").read_text() == (
        original.parent / "best_program.py").read_text()


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the environment: only a replay can run with llm=openai and no base_url."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_replay_rebuilds_the_recorded_archive_without_a_model(run_evo, tmp_path: Path,
                                                              no_model: None) -> None:
    with ScriptedServer(_script()) as server:
        original = run_evo("run", *COMMON, f"llm.base_url={server.base_url}", "seed=7",
                           "name=original", timeout=600)
    assert original.returncode == 0, original.stderr
    db = tmp_path / "runs" / "original" / "archive.db"
    outcomes = {outcome for (outcome,) in archive_rows(
        db, "SELECT DISTINCT outcome FROM mutation_calls")}
    assert "applied" in outcomes and outcomes & {"llm_error:server", "llm_error:malformed"}
    assert archive_rows(db, "SELECT COUNT(*) FROM programs WHERE error = 'crash'")[0][0] > 0
    recorded = _llm_calls(db)
    # every call is recorded, failures included; an unmatched diff is asked again
    assert len(server.requests) >= len(recorded) > archive_rows(
        db, "SELECT COUNT(*) FROM mutation_calls")[0][0]
    assert {row[9] for row in recorded} >= {None, "server"}

    replay = run_evo("run", *COMMON, "llm.replay=runs/original", "seed=7", "name=replayed",
                     timeout=600)
    assert replay.returncode == 0, replay.stderr
    assert "mutator: replay of runs/original (no model is called)" in replay.stdout
    replayed = tmp_path / "runs" / "replayed" / "archive.db"
    _assert_same_run(db, replayed)
    assert _llm_calls(replayed) == recorded  # the replay is recorded too, and replayable

    # llm=auto with replay set replays too: no model is configured, yet no GP fallback
    auto = run_evo("run", *[a for a in COMMON if a != "llm=openai"], "llm=auto",
                   "llm.replay=runs/original", "seed=7", "name=auto", timeout=600)
    assert auto.returncode == 0, auto.stderr
    assert "replay of runs/original" in auto.stdout and "offline GP" not in auto.stdout
    _assert_same_run(db, tmp_path / "runs" / "auto" / "archive.db")

    # past the recording's end: said as such (it blamed a change of config or code)
    longer = run_evo("run", *COMMON, "llm.replay=runs/original", "seed=7", "name=longer",
                     "search.max_evaluations=40", timeout=600)
    assert longer.returncode == 1, longer.stderr
    last = archive_rows(db, "SELECT MAX(step) FROM mutation_calls")[0][0]
    assert (f"the recording ends at step {last}: a replay cannot go past it (give "
            "search.max_evaluations no larger than the recorded run's, 15)") in longer.stdout

    changed = run_evo("run", *COMMON, "llm.replay=runs/original", "seed=8", "name=changed",
                      timeout=600)
    assert changed.returncode == 1, changed.stderr
    assert "Traceback" not in changed.stdout + changed.stderr
    lines = [line for line in changed.stdout.splitlines() if "changed since the recording"
             in line]
    assert len(lines) == 1 and "replay" in lines[0], changed.stdout
    assert lines[0].startswith("run failed: the model cannot be used: replay of")
    changed_db = tmp_path / "runs" / "changed" / "archive.db"
    assert archive_rows(changed_db, "SELECT outcome FROM mutation_calls") == [
        ("llm_error:replay",)]  # stopped at the first unanswered request, and recorded it
    assert archive_rows(changed_db, "SELECT error_kind FROM llm_calls") == [("replay",)]


def test_an_endless_reply_is_dropped_and_still_counted(run_evo, tmp_path: Path,
                                                       no_model: None) -> None:
    """A model that does not stop: a reply over llm.max_reply_chars fails as malformed
    before anything parses or stores it whole; its start, tokens and cost are kept,
    the run goes on, and the replay gives the same run."""
    counter = itertools.count()
    endless = _diff(7) + "and so on " * 30_000  # 300k characters

    def script(request: dict) -> dict | str:
        n = next(counter)
        return {"reply": endless, "completion_tokens": 75_000} if n % 2 else _diff(n + 2)

    args = [*COMMON, "search.max_evaluations=6", "llm.max_reply_chars=50000", "seed=3"]
    with ScriptedServer(script) as server:
        original = run_evo("run", *args, f"llm.base_url={server.base_url}", "name=original",
                           timeout=600)
    assert original.returncode == 0, original.stderr
    db = tmp_path / "runs" / "original" / "archive.db"
    dropped = archive_rows(db, """SELECT length(response), completion_tokens, cost
                                  FROM mutation_calls WHERE outcome = 'llm_error:malformed'""")
    assert dropped, archive_rows(db, "SELECT outcome FROM mutation_calls")
    for stored, tokens, cost in dropped:
        assert stored == 2000 and tokens == 75_000 and cost >= 75_000 * 2.0 / 1e6
    failed = archive_rows(db, "SELECT error_message, length(response), completion_tokens "
                              "FROM llm_calls WHERE error_kind = 'malformed'")
    assert len(failed) == len(dropped)
    for message, stored, tokens in failed:
        assert message.startswith("the reply has 300,") and "=50,000" in message
        assert "\n" not in message and stored == 2000 and tokens == 75_000
    assert archive_rows(db, "SELECT MAX(length(response)) FROM llm_calls")[0][0] <= 2000
    applied = archive_rows(db, "SELECT COUNT(*) FROM mutation_calls WHERE outcome = 'applied'")
    assert applied[0][0] >= 4  # the run went on to its budget
    total = archive_rows(db, "SELECT SUM(cost) FROM mutation_calls")[0][0]
    assert archive_rows(db, "SELECT cost FROM runs")[0][0] == pytest.approx(total)

    replay = run_evo("run", *args, "llm.replay=runs/original", "name=replayed", timeout=600)
    assert replay.returncode == 0, replay.stderr
    _assert_same_run(db, tmp_path / "runs" / "replayed" / "archive.db")

def _wait_for_hang(server: ScriptedServer, timeout: float) -> None:
    """Until the request that hangs has arrived (a retry after an unmatched diff)."""
    deadline = time.monotonic() + timeout
    while not any(n >= 6 and "could not be applied" in r["messages"][-1]["content"]
                  for n, r in enumerate(list(server.requests))):
        if time.monotonic() > deadline:
            raise AssertionError("the run never asked again after an unmatched diff")
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_and_resumed_recording_replays_exactly(run_evo, tmp_path: Path,
                                                      no_model: None) -> None:
    """A run killed inside a step (one call of the step recorded, the next one pending)
    and resumed keeps recording into the same table; the replay uses the answers of the
    session that finished the step, and rebuilds the archive of the resumed run."""
    with ScriptedServer(_script(hang_after=6)) as server:
        args = [*COMMON, f"llm.base_url={server.base_url}", "seed=11"]
        process = subprocess.Popen(evo_command("run", *args, "name=killed"), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_hang(server, timeout=300)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        db = tmp_path / "runs" / "killed" / "archive.db"
        pending_step = archive_rows(db, "SELECT MAX(step) FROM llm_calls")[0][0]
        done = archive_rows(db, "SELECT MAX(step) FROM mutation_calls")[0][0]
        assert pending_step is not None and pending_step > (done if done is not None else -1)
        resumed = run_evo("resume", "runs/killed", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    sessions = archive_rows(db, "SELECT DISTINCT session FROM llm_calls ORDER BY session")
    assert sessions == [(0,), (1,)]  # the resume recorded into the same table
    # the pending step was asked again, by the resumed session
    assert archive_rows(db, f"SELECT DISTINCT session FROM llm_calls "
                            f"WHERE step = {pending_step}") == [(0,), (1,)]
    replay = run_evo("run", *COMMON, "llm.replay=runs/killed", "seed=11", "name=replayed",
                     timeout=600)
    assert replay.returncode == 0, replay.stderr
    _assert_same_run(db, tmp_path / "runs" / "replayed" / "archive.db")


class _FakeModel:
    """An LLMClient that answers from a list (a string, or an LLMError to raise)."""

    model = "fake"

    def __init__(self, answers: list[str | LLMError]) -> None:
        self.answers = list(answers)

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int, seed: int | None = None) -> Completion:
        answer = self.answers.pop(0)
        if isinstance(answer, LLMError):
            raise answer
        return Completion(text=answer, model=self.model, prompt_tokens=3,
                          completion_tokens=len(answer), latency_s=0.5, cost=0.01)

    async def close(self) -> None:
        pass


def _ask(client: object, step: int | None, text: str, seed: int = 1) -> str:
    async def call() -> str:
        set_call_step(step)
        try:
            completion = await client.complete(  # type: ignore[attr-defined]
                [{"role": "user", "content": text}], temperature=0.5, max_tokens=64,
                seed=seed)
        except LLMError as exc:
            return f"{exc.kind}: {exc}"
        return completion.text

    return asyncio.run(call())


def _store(tmp_path: Path, resume: bool = False) -> ArchiveStore:
    engine = make_engine(sqlite_url(tmp_path / "archive.db"))
    if resume:
        return ArchiveStore.open_run(engine)[0]
    return ArchiveStore.create_run(engine, "r", "p", 0, {})


def test_replay_client_answers_in_recorded_order(tmp_path: Path) -> None:
    log = CallLog()
    log.bind(_store(tmp_path))
    recorder = RecordingClient(_FakeModel(["a1", "a2", LLMError("server", "HTTP 500"), "b"]),
                               log)
    assert [_ask(recorder, 0, "same"), _ask(recorder, 0, "same"), _ask(recorder, 1, "x"),
            _ask(recorder, 1, "y")] == ["a1", "a2", "server: HTTP 500", "b"]

    replay = ReplayClient(str(tmp_path), "fake")
    # identical repeated requests get their answers in order; errors come back as raised
    assert _ask(replay, 0, "same") == "a1"
    assert _ask(replay, 1, "x") == "server: HTTP 500"
    assert _ask(replay, 0, "same") == "a2"
    assert _ask(replay, 1, "y") == "b"
    exhausted = _ask(replay, 0, "same")
    assert exhausted.startswith("replay: ") and "only 2 time(s)" in exhausted
    for changed in (_ask(replay, 1, "y", seed=2),
                    _ask(ReplayClient(str(tmp_path), "other-model"), 1, "y")):
        assert changed.startswith("replay: ") and "changed since the recording" in changed
        assert "\n" not in changed
    past = _ask(replay, 2, "y")  # a step after the recording's last
    assert past.startswith("replay: ") and past.endswith(
        "the recording ends at step 1: a replay cannot go past it (give "
        "search.max_evaluations no larger than the recorded run's)")


def test_replay_uses_the_session_that_finished_a_step(tmp_path: Path) -> None:
    killed = CallLog()
    killed.bind(_store(tmp_path))
    assert _ask(RecordingClient(_FakeModel(["lost"]), killed), 3, "q") == "lost"
    resumed = CallLog()
    resumed.bind(_store(tmp_path, resume=True))
    assert resumed.session == 1
    assert _ask(RecordingClient(_FakeModel(["kept"]), resumed), 3, "q") == "kept"
    assert _ask(ReplayClient(str(tmp_path), "fake"), 3, "q") == "kept"


def test_replay_of_a_missing_or_empty_recording_says_so(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="holds no archive.db") as missing:
        ReplayClient(str(tmp_path / "nowhere"), "fake")
    assert missing.value.kind == "replay"
    _store(tmp_path)
    with pytest.raises(LLMError, match="recorded no model calls"):
        ReplayClient(str(tmp_path), "fake")


def test_replay_with_the_offline_mutator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="llm=gp asks no model"):
        make_mutator(LLMConfig(provider="gp", replay=str(tmp_path)),
                     ProblemConfig(name="p", entry="f"))


def test_the_reply_guard_makes_replies_and_errors_storable(tmp_path: Path) -> None:
    """A NUL or a lone surrogate from a server, in a reply or an error message, is
    recorded (and replayed) as U+FFFD; a lone surrogate used to stop the run here."""
    log = CallLog()
    log.bind(_store(tmp_path))
    guarded = RecordingClient(ReplyGuard(_FakeModel(
        ["ok \x00 \ud800", LLMError("server", "HTTP 500: \ud800")]), None), log)
    assert _ask(guarded, 0, "a") == "ok \ufffd \ufffd"
    assert _ask(guarded, 1, "b") == "server: HTTP 500: \ufffd"
    replay = ReplayClient(str(tmp_path), "fake")
    assert [_ask(replay, 0, "a"), _ask(replay, 1, "b")] == [
        "ok \ufffd \ufffd", "server: HTTP 500: \ufffd"]
