"""A problem's own scorer that never returns: `problem.score_timeout_s` stops the run
with one line naming score.py, and Ctrl-C still stops a run waiting on it. Both used
to hang `evo run` for good (the scorer ran on the default executor, whose threads the
interpreter joins at exit, and nothing bounded it)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.conftest import archive_rows, running_evo

# score.py as scaffolded, but score() sleeps for an hour from its second call on: the
# seed is scored, every child waits
STUCK_AFTER_THE_SEED = (
    '_CALLS = []\n\n\n'
    'def score(outputs: object, instances: list) -> ScoreResult:\n'
    '    _CALLS.append(1)\n'
    '    if len(_CALLS) > 1:\n'
    '        __import__("time").sleep(3600)\n'
    '    return _score(outputs, instances)\n\n\n'
    'def _score(outputs: object, instances: list) -> ScoreResult:\n')


def stuck_problem(run_evo, tmp_path: Path) -> None:
    assert run_evo("new-problem", "stuck").returncode == 0
    score = tmp_path / "problems" / "stuck" / "score.py"
    text = score.read_text()
    head = "def score(outputs: object, instances: list) -> ScoreResult:\n"
    assert head in text
    score.write_text(text.replace(head, STUCK_AFTER_THE_SEED))


def test_a_scorer_past_its_time_limit_stops_the_run(run_evo, tmp_path: Path) -> None:
    stuck_problem(run_evo, tmp_path)
    done = run_evo("run", "problem=stuck", "sandbox=process", "ui=plain", "name=s",
                   "search.max_evaluations=5", "problem.score_timeout_s=2",
                   timeout=120)  # the scorer's hour would overrun it
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "stuck/score.py: score() has not returned after 2 s (problem.score_timeout_s)" \
        in done.stderr
    db = tmp_path / "runs" / "s" / "archive.db"
    assert archive_rows(db, "SELECT status FROM runs") == [("failed",)]
    assert archive_rows(db, "SELECT count(*) FROM evaluations") == [(1,)]  # the seed's


def test_ctrl_c_stops_a_run_waiting_on_a_stuck_scorer(run_evo, tmp_path: Path) -> None:
    stuck_problem(run_evo, tmp_path)
    db = tmp_path / "runs" / "c" / "archive.db"
    with running_evo(tmp_path, "run", "problem=stuck", "sandbox=process", "ui=plain",
                     "name=c", "search.max_evaluations=5") as process:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _seeded(db):
            time.sleep(0.1)
        time.sleep(3)  # children are out of the sandbox, waiting on score()
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "run interrupted" in stdout
    assert archive_rows(db, "SELECT status FROM runs") == [("interrupted",)]


def _seeded(db: Path) -> bool:
    try:
        return archive_rows(db, "SELECT count(*) FROM evaluations")[0][0] >= 1
    except Exception:  # noqa: BLE001 - the file or its schema is not there yet
        return False
