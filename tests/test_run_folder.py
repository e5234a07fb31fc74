"""A run's folder when a start or a resume is cut short: an archive with no run in it
is started again, Ctrl-C during start-up is one line, and config.yaml follows the
config a resume runs under."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evoengine.archive.store import make_engine, sqlite_url
from evoengine.cli.main import main
from evoengine.controller import setup
from evoengine.controller.run_folder import holds_no_run
from tests.conftest import archive_rows

QUICK = ["problem=bin_packing_quick", "llm=gp", "ui=plain", "sandbox=process",
         "~problem.splits.validation", "~problem.splits.test", "search.num_islands=1",
         "search.llm_concurrency=1", "search.eval_concurrency=1"]


def _empty_schema(db: Path) -> None:
    """What a start killed after the schema and before the run's row leaves."""
    make_engine(sqlite_url(db)).dispose()


@pytest.mark.parametrize("left", ["empty file", "schema, no run"])
def test_a_start_cut_short_before_its_run_row_starts_again(run_evo, tmp_path: Path,
                                                           left: str) -> None:
    """`evo run name=X` said "already holds a run; continue it with evo resume", and
    `evo resume` said "not an evoengine archive" or "no run found": the folder could
    only be deleted by hand."""
    folder = tmp_path / "runs" / "cut"
    folder.mkdir(parents=True)
    db = folder / "archive.db"
    if left == "empty file":
        db.write_bytes(b"")
    else:
        _empty_schema(db)
        (folder / "archive.db-run1.lock").write_text("")
    assert holds_no_run(db)
    resumed = run_evo("resume", "runs/cut")
    assert resumed.returncode == 2 and resumed.stderr == (
        "evo: error: runs/cut holds no run: its start was cut short before the run was "
        "stored; start it again with `evo run ... name=cut`\n")
    again = run_evo("run", *QUICK, "search.max_evaluations=3", "name=cut")
    assert again.returncode == 0, again.stderr
    assert (f"note: {Path('runs') / 'cut'} held the archive of a start that was cut short, "
            "with no run in it; starting afresh there") in again.stdout
    assert archive_rows(db, "SELECT name, status FROM runs") == [("cut", "finished")]


def test_an_archive_with_a_run_or_other_tables_is_never_cleared(run_evo, tmp_path: Path
                                                                 ) -> None:
    folder = tmp_path / "runs" / "kept"
    folder.mkdir(parents=True)
    db = folder / "archive.db"
    with sqlite3.connect(db) as conn:  # someone's own database under that name
        conn.execute("CREATE TABLE notes (text TEXT)")
    assert not holds_no_run(db)
    refused = run_evo("run", *QUICK, "search.max_evaluations=3", "name=kept")
    assert refused.returncode == 2
    assert "already holds a run" in refused.stderr
    assert archive_rows(db, "SELECT name FROM sqlite_master") == [("notes",)]
    done = run_evo("run", *QUICK, "search.max_evaluations=3", "name=done")
    assert done.returncode == 0, done.stderr
    assert not holds_no_run(tmp_path / "runs" / "done" / "archive.db")


def test_ctrl_c_during_start_up_is_one_line_and_marks_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        run_evo) -> None:
    """A KeyboardInterrupt after the run's row (here: while config.yaml is written)
    was a traceback, and the row said "running" for good."""
    monkeypatch.chdir(tmp_path)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(setup, "save_config", interrupted)
    code = main(["run", *QUICK, "search.max_evaluations=3", "name=early"])
    assert code == 130
    assert capsys.readouterr().err == "evo: interrupted\n"
    db = tmp_path / "runs" / "early" / "archive.db"
    assert archive_rows(db, "SELECT status FROM runs") == [("interrupted",)]
    monkeypatch.undo()
    resumed = run_evo("resume", "runs/early", "search.max_evaluations=3")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "runs" / "early" / "config.yaml").is_file()  # written by the resume


def test_a_resume_updates_config_yaml(run_evo, tmp_path: Path) -> None:
    """config.yaml kept the first start's settings: a resume's overrides went to the
    database only."""
    first = run_evo("run", *QUICK, "search.max_evaluations=3", "name=grow")
    assert first.returncode == 0, first.stderr
    config_yaml = tmp_path / "runs" / "grow" / "config.yaml"
    assert OmegaConf.load(config_yaml).search.max_evaluations == 3
    more = run_evo("resume", "runs/grow", "search.max_evaluations=5", "seed=4")
    assert more.returncode == 0, more.stderr
    saved = OmegaConf.load(config_yaml)
    assert (saved.search.max_evaluations, saved.seed) == (5, 4)
    assert not list(config_yaml.parent.glob(".config.yaml*"))  # no partial file left
