"""`search.deterministic=true`: the same seed and config give the same archive at any
concurrency, whichever model reply or evaluation comes back first, and such a run
replays exactly.

The scripted server (evoengine.llm.scripted_server) stands in for a model, which
cannot be reached here. Its replies depend only on the request, and each comes after
a random delay, so two runs see their replies in different orders.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.llm.recording import CallLog, RecordingClient, ReplayClient
from evoengine.llm.scripted_server import ScriptedServer
from tests.conftest import archive_rows, program_signature
from tests.test_llm_replay import _ask, _assert_same_run, _FakeModel
from tests.test_llm_run import _diff, _full

pytestmark = pytest.mark.slow

CONCURRENT = ["problem=bin_packing_quick", "llm=openai", "ui=plain", "sandbox=process",
              "search.num_islands=2", "search.llm_concurrency=4", "search.eval_concurrency=2",
              "search.deterministic=true", "search.migration_interval=6",
              "mutation.novelty=true", "mutation.novelty_backend=text",
              "mutation.novelty_window=3", "mutation.novelty_threshold=0.9", "llm.ensemble=ucb",
              "llm.models=[{model: model-a}, {model: model-b}]", "llm.backoff_s=0.01",
              "llm.max_retries=1", "llm.timeout_s=10", "search.max_evaluations=24", "seed=3"]


FORMULAS = ("-(bins - item) * {c}", "-np.abs(bins - item - {c} / 10)",
            "np.where(bins - item < {c} / 20, 0.0, -(bins - item))",
            "-np.sqrt(bins - item + {c})", "-(bins - item) ** 2 + {c} * np.arange(len(bins))")


def _answer(request: dict) -> dict:
    """A reply chosen by the request alone, after a random delay."""
    digest = int(hashlib.sha256(json.dumps(
        [request.get("model"), request["messages"], request.get("seed")],
        sort_keys=True).encode()).hexdigest(), 16)
    prompt = request["messages"][-1]["content"]
    if "<<<<<<< SEARCH" in prompt or "could not be applied" in prompt:
        text = _diff(digest % 4 + 2)  # applies to the seed only: unmatched, duplicates
    elif digest % 5 == 0:
        text = _full(digest % 3 + 2)  # few variants: duplicates and near-duplicates
    else:
        formula = FORMULAS[digest % len(FORMULAS)].format(c=digest % 89 + 1)
        text = ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
                f"    return {formula}\n# EVOLVE-BLOCK-END\n```")
    return {"reply": text, "delay": random.uniform(0.0, 0.2)}


def _steps(db: Path) -> list[tuple]:
    """Every step as written, without timings."""
    return archive_rows(db, """
        SELECT step, parent_id, program_id, outcome, operator, model, edit, prompt,
               response, prompt_tokens, completion_tokens, cost
        FROM mutation_calls ORDER BY id""")


def test_concurrent_deterministic_runs_agree_and_replay_exactly(
        run_evo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    for name in ("first", "second"):
        with ScriptedServer(_answer) as server:
            result = run_evo("run", *CONCURRENT, f"llm.base_url={server.base_url}",
                             f"name={name}", timeout=600)
        assert result.returncode == 0, result.stderr
        runs.append(tmp_path / "runs" / name / "archive.db")
    first, second = runs
    outcomes = {o for (o,) in archive_rows(first, "SELECT outcome FROM mutation_calls")}
    assert {"applied", "duplicate"} <= outcomes  # the as-of checks were exercised
    models = {m for (m,) in archive_rows(first, "SELECT model FROM mutation_calls")}
    assert models == {"model-a", "model-b"}  # the bandit chose both
    assert archive_rows(first, "SELECT COUNT(*) FROM programs WHERE operator = "
                               "'migration'")[0][0] > 0
    assert program_signature(second) == program_signature(first)
    assert _steps(second) == _steps(first)

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    replay = run_evo("run", *CONCURRENT, "llm.replay=runs/first", "name=replayed",
                     timeout=600)
    assert replay.returncode == 0, replay.stderr
    _assert_same_run(first, tmp_path / "runs" / "replayed" / "archive.db")


def test_a_replay_that_diverges_from_a_concurrent_recording_says_why(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "archive.db"))
    store = ArchiveStore.create_run(engine, "r", "p", 0, {
        "search": {"llm_concurrency": 4, "eval_concurrency": 2, "deterministic": False}})
    log = CallLog()
    log.bind(store)
    assert _ask(RecordingClient(_FakeModel(["a"]), log), 0, "q") == "a"
    diverged = _ask(ReplayClient(str(tmp_path), "fake"), 1, "q")
    assert diverged.startswith("replay: ") and "\n" not in diverged
    assert "ran 4 steps at once without search.deterministic=true" in diverged
