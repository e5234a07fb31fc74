"""The ask/tell loop end to end, through the real `evo` command and process sandbox:
a run stores everything, is deterministic, survives SIGKILL and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import archive_rows, evo_command, program_signature, running_evo

# The process sandbox: the Ctrl-C test looks for the runners among evo's children.
QUICK = ["problem=bin_packing_quick", "llm=gp", "ui=plain", "search.num_islands=2",
         "sandbox=process", "search.llm_concurrency=1", "search.eval_concurrency=1"]


def _train_evaluations(db: Path) -> int:
    return archive_rows(db, "SELECT COUNT(*) FROM evaluations WHERE split='train'")[0][0]


def test_run_stores_every_program_and_reports_the_best(run_evo, tmp_path: Path) -> None:
    result = run_evo("run", *QUICK, "search.max_evaluations=25", "name=basic",
                     "search.migration_interval=10")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "runs" / "basic" / "archive.db"
    assert "offline GP" in result.stdout  # the fallback is announced in one line
    assert _train_evaluations(db) == 25
    # every evaluated program has a row with its score or its error
    evaluated = archive_rows(db, """SELECT p.valid, p.score, p.error FROM programs p
                                    JOIN evaluations e ON e.program_id = p.id
                                    WHERE e.split = 'train'""")
    assert len(evaluated) == 25
    assert all((valid and score is not None) or (not valid and error) for valid, score, error
               in evaluated)
    # migration copies exist and point to their source
    migrated = archive_rows(db, "SELECT parent_id FROM programs WHERE operator='migration'")
    assert migrated and all(parent is not None for (parent,) in migrated)
    best_score, best_validation = archive_rows(
        db, "SELECT score, validation_score FROM programs WHERE valid "
            "ORDER BY score DESC, id LIMIT 1")[0]
    assert best_validation is not None  # the best program was scored on validation
    assert "train score" in result.stdout and "validation score" in result.stdout
    best_file = tmp_path / "runs" / "basic" / "best_program.py"
    assert best_file.is_file()
    assert archive_rows(db, "SELECT status FROM runs")[0][0] == "finished"
    assert f"{best_score:.6g}" in result.stdout


def test_resume_applies_db_echo_given_then(run_evo, tmp_path: Path) -> None:
    first = run_evo("run", *QUICK, "search.max_evaluations=2", "name=echo")
    assert first.returncode == 0, first.stderr
    assert "INSERT INTO programs" not in first.stdout + first.stderr
    resumed = run_evo("resume", "runs/echo", "search.max_evaluations=3", "db.echo=true")
    assert resumed.returncode == 0, resumed.stderr
    assert "INSERT INTO programs" in resumed.stdout + resumed.stderr  # SQLAlchemy's log


BAD_RESUME_OVERRIDES = [
    ("problem=tsp", "problem: a resumed run keeps its problem config"),
    ("llm=openai", "llm: a resumed run keeps its llm config"),
    # (it used to suggest `evo run sandbox=nosuch`, which fails the same way)
    ("sandbox=nosuch", "sandbox: no option 'nosuch'; choose one of auto, docker, process"),
    ("+search.extra=1", "+KEY and ~KEY are for `evo run`"),
    ("search.max_evaluations", "takes KEY=VALUE overrides"),
    ("search.max_evaluations=abc", "search.max_evaluations: 'abc' is not a valid Integer"),
    ("search.extra=1", "search.extra: unknown config key"),
    # these used to be taken and stored, describing another database or problem
    ("db.url=sqlite:////tmp/other.db", "db.url: a resumed run stays in its database"),
    ("problem.name=tsp", "problem.name: a resumed run keeps its problem"),
    ("search.seed=1,2", "a resume takes one value per key"),
]


def test_resume_refuses_a_bad_override_in_one_line_and_changes_nothing(
        run_evo, tmp_path: Path) -> None:
    first = run_evo("run", *QUICK, "search.max_evaluations=2", "name=kept")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "runs" / "kept" / "archive.db"
    before = (program_signature(db), archive_rows(db, "SELECT status, config FROM runs"))
    for override, says in BAD_RESUME_OVERRIDES:
        resumed = run_evo("resume", "runs/kept", override)
        assert resumed.returncode != 0, override
        message = resumed.stderr.strip()
        assert message.startswith("evo: error: ") and "\n" not in message, message
        assert says in message, message
        assert (program_signature(db),
                archive_rows(db, "SELECT status, config FROM runs")) == before, override


def test_same_seed_and_config_give_an_identical_archive(run_evo, tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = run_evo("run", *QUICK, "search.max_evaluations=20", "seed=3", f"name={name}",
                         "search.migration_interval=7")
        assert result.returncode == 0, result.stderr
    first = program_signature(tmp_path / "runs" / "a" / "archive.db")
    second = program_signature(tmp_path / "runs" / "b" / "archive.db")
    assert len(first) > 20
    assert first == second
    other = run_evo("run", *QUICK, "search.max_evaluations=20", "seed=4", "name=c",
                    "search.migration_interval=7")
    assert other.returncode == 0, other.stderr
    assert program_signature(tmp_path / "runs" / "c" / "archive.db") != first


def _wait_for(db: Path, evaluations: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                if _train_evaluations(db) >= evaluations:
                    return
            except Exception:  # the schema may not exist yet
                pass
        time.sleep(0.05)
    raise AssertionError(f"{db} never reached {evaluations} evaluations")


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(run_evo, tmp_path: Path) -> None:
    common = [*QUICK, "search.max_evaluations=40", "seed=5", "search.migration_interval=1000"]
    reference = run_evo("run", *common, "name=reference")
    assert reference.returncode == 0, reference.stderr
    db = tmp_path / "runs" / "killed" / "archive.db"
    for kill_at in (7, 19):  # kill twice, at different points
        args = ("run", *common, "name=killed") if kill_at == 7 else ("resume", "runs/killed")
        with running_evo(tmp_path, *args) as process:
            _wait_for(db, kill_at, timeout=120)
            before = program_signature(db)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        after_kill = program_signature(db)
        assert after_kill[:len(before)] == before  # nothing evaluated was lost
    resumed = run_evo("resume", "runs/killed")
    assert resumed.returncode == 0, resumed.stderr
    assert _train_evaluations(db) == 40
    steps = archive_rows(db, "SELECT step FROM mutation_calls ORDER BY step")
    assert len(steps) == len(set(steps))  # no step was done twice
    codes = archive_rows(db, """SELECT p.code FROM programs p JOIN evaluations e
                                ON e.program_id = p.id WHERE e.split = 'train'""")
    assert len(codes) == len(set(codes))  # no program was evaluated twice
    # concurrency 1: the interrupted run ends exactly where an uninterrupted one does
    assert program_signature(db) == program_signature(
        tmp_path / "runs" / "reference" / "archive.db")


def test_a_run_has_one_controller_at_a_time(run_evo, tmp_path: Path) -> None:
    """`evo resume` of a run another process is driving is refused in one line, before
    it writes anything (it used to run a second controller on the same archive,
    overwriting the first's stored config); once that process is gone, even killed,
    the run resumes."""
    db = tmp_path / "runs" / "busy" / "archive.db"
    process = subprocess.Popen(evo_command("run", *QUICK, "search.max_evaluations=500",
                                           "name=busy"),
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(db, 3, timeout=120)
        config_before = archive_rows(db, "SELECT config FROM runs")
        second = run_evo("resume", "runs/busy", "search.max_evaluations=600")
        assert second.returncode == 2
        assert second.stderr.strip() == (
            "evo: error: run 'busy' is being driven by another `evo` process; wait for it "
            "to finish (or stop it with Ctrl-C), then resume")
        assert archive_rows(db, "SELECT config FROM runs") == config_before
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    resumed = run_evo("resume", "runs/busy", "search.max_evaluations=12")
    assert resumed.returncode == 0, resumed.stderr


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | _descendants(child)
    return found


def test_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "runs" / "interrupted" / "archive.db"
    with running_evo(tmp_path, "run", *QUICK, "search.max_evaluations=100000",
                     "name=interrupted") as process:
        _wait_for(db, 5, timeout=120)
        runners = _descendants(process.pid)
        assert runners  # the resident sandbox runners are up
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "interrupted" in out
    assert archive_rows(db, "SELECT status FROM runs")[0][0] == "interrupted"
    time.sleep(0.5)
    assert not [pid for pid in runners if Path(f"/proc/{pid}").exists()
                and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    resumed = subprocess.run(evo_command("resume", "runs/interrupted",
                                         "search.max_evaluations=12"),
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _train_evaluations(db) >= 12
    assert os.path.exists(tmp_path / "runs" / "interrupted" / "best_program.py")


def test_runs_started_in_the_same_second_get_folders_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without name=, the folder is named after the problem and the second; a second run
    in that second took the same name and failed with "already holds a run"."""
    from datetime import datetime

    from evoengine.config.compose import load_run_config
    from evoengine.controller import setup

    class FrozenClock(datetime):  # every run starts in the same second
        @classmethod
        def now(cls, tz: object = None) -> datetime:
            return datetime(2026, 11, 21, 17, 2, 27)

    monkeypatch.setattr(setup, "datetime", FrozenClock)
    monkeypatch.chdir(tmp_path)
    names = []
    for _ in range(3):
        config = load_run_config(["problem=bin_packing_quick", "runs_dir=runs"])[0]
        run_dir, made = setup._make_run_dir(config)
        assert run_dir == Path("runs") / config.name and run_dir.is_dir() and made
        names.append(config.name)
    base = "bin_packing-20261121-170227"
    assert names == [base, f"{base}-2", f"{base}-3"]
    # a name the user chose is theirs: an existing run there is refused, not renamed
    config = load_run_config(["problem=bin_packing_quick", f"name={base}"])[0]
    with sqlite3.connect(Path("runs") / base / "archive.db") as conn:  # a run's row
        conn.execute("CREATE TABLE runs (id INTEGER)")
        conn.execute("INSERT INTO runs VALUES (1)")
    with pytest.raises(setup.StoreError, match="already holds a run"):
        setup._make_run_dir(config)
    (Path("runs") / "a_file").write_text("")
    config = load_run_config(["problem=bin_packing_quick", "name=a_file"])[0]
    with pytest.raises(setup.ConfigError, match="is a file, not a run folder"):
        setup._make_run_dir(config)


def test_a_grid_axis_the_scorer_does_not_report_is_refused(run_evo) -> None:
    """An axis no program reports used to leave every program at 0 on it, silently.
    The refused run's folder stays, and the message says how to go on with it (it
    said nothing of it, and a second `evo run name=axis` only said the name was taken)."""
    result = run_evo("run", *QUICK, "search.max_evaluations=3", "name=axis",
                     "search.features=[{name: bin_fill_sd, min: 0, max: 1, bins: 4}]")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "evo: error: search.features: the grid axis 'bin_fill_sd' is not a feature the "
        "problem's scorer reports (the seed's: bin_fill_std, code_length); name one of those"
        " (runs/axis is kept as a failed run: after the fix, `evo resume runs/axis` "
        "continues it)")
    fine = run_evo("resume", "runs/axis", "search.max_evaluations=3",
                   "search.features=[{name:bin_fill_std,min:0,max:1,bins:4}]")
    assert fine.returncode == 0, fine.stderr


def _stored_search(db: Path) -> dict:
    return json.loads(archive_rows(db, "SELECT config FROM runs")[0][0])["search"]


def test_a_resume_can_regrid_but_not_drop_islands_or_axes(run_evo, tmp_path: Path) -> None:
    """A resume that dropped islands holding programs used to end in a traceback and
    leave the smaller count stored, so that every later resume failed too; an axis the
    scores lack was taken silently. Now both are refused in one line and change nothing;
    other bins and ranges, and more islands, regrid the stored programs."""
    first = run_evo("run", *QUICK, "search.max_evaluations=3", "name=g")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "runs" / "g" / "archive.db"
    before = _stored_search(db)
    fewer = run_evo("resume", "runs/g", "search.num_islands=1", "search.max_evaluations=5")
    assert fewer.returncode == 2 and fewer.stderr.strip() == (
        "evo: error: search.num_islands: the run has programs on 2 islands; a resume can add "
        "islands but not remove them (give search.num_islands=2 or more)")
    # Hydra's override syntax, as `evo run` reads it (no spaces after the colons)
    axis = run_evo("resume", "runs/g", "search.features=[{name:nope,min:0,max:1,bins:4}]")
    assert axis.returncode == 2 and axis.stderr.strip() == (
        "evo: error: search.features: the grid axis 'nope' is not a feature the problem's "
        "scorer reports (the seed's: bin_fill_std, code_length); name one of those")
    assert _stored_search(db) == before
    regrid = run_evo("resume", "runs/g", "search.num_islands=3", "search.max_evaluations=6",
                     "search.features=[{name:bin_fill_std,min:0,max:0.2,bins:3}]")
    assert regrid.returncode == 0, regrid.stderr
    after = _stored_search(db)
    assert after["num_islands"] == 3 and after["features"][0]["bins"] == 3
    assert _train_evaluations(db) == 6
    assert "problem.splits changed" not in regrid.stdout
    other_data = run_evo("resume", "runs/g", "search.max_evaluations=7",
                         "problem.splits.train.spec.count=3")
    assert other_data.returncode == 0, other_data.stderr
    assert ("note: problem.splits changed: the stored programs keep the scores they had "
            "on the old instances") in other_data.stdout
    assert ("resume changes problem.splits.train.spec.count 2 -> 3, search.max_evaluations "
            "6 -> 7") in other_data.stdout
    slower = run_evo("resume", "runs/g", "search.max_evaluations=8", "problem.timeout_s=20")
    assert slower.returncode == 0, slower.stderr
    assert ("note: problem.timeout_s changed: the stored programs keep the scores they had "
            "under the old setting") in slower.stdout

def test_ctrl_c_during_the_final_validation_ends_it(run_evo, tmp_path: Path) -> None:
    """Ctrl-C after the search, while the best programs are scored on validation, used
    to be ignored until every validation had run (minutes, for a slow problem)."""
    assert run_evo("new-problem", "slowval").returncode == 0
    folder = tmp_path / "problems" / "slowval"
    score = folder / "score.py"
    score.write_text(score.read_text().replace(
        '    return [{"x": float(s["x"]), "y": float(s["y"])} for s in samples]',
        '    rows = [{"x": float(s["x"]), "y": float(s["y"])} for s in samples]\n'
        '    return [{**rows[0], "sleep": 120}, *rows[1:]] if split == "validation" else rows'))
    harness = folder / "harness.py"
    harness.write_text(harness.read_text().replace(
        '    for sample in instances:\n',
        '    for sample in instances:\n'
        '        if "sleep" in sample:\n'
        '            __import__("time").sleep(sample["sleep"])\n'))
    db = tmp_path / "runs" / "v" / "archive.db"
    with running_evo(tmp_path, "run", "problem=slowval", "sandbox=process", "ui=plain",
                     "name=v", "search.max_evaluations=3", "problem.timeout_s=300",
                     "problem.cpu_s=300") as process:
        _wait_for(db, 3, timeout=120)
        time.sleep(3)  # the search is over; the validation sleeps
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "validation of the best programs stopped by user" in stdout
    assert "run finished: evaluation budget spent" in stdout
    assert archive_rows(db, "SELECT status FROM runs") == [("finished",)]
