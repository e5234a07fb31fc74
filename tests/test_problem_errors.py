"""A problem folder's own host-side code (score.py) failing: one-line errors that name
the file, the exception and its line, never a traceback or a silent exit."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evoengine.config.compose import load_run_config
from evoengine.evaluation.problem import Problem, ProblemError
from evoengine.paths import resource_dir


def _copy_of_bin_packing(tmp_path: Path) -> Path:
    folder = tmp_path / "my_packing"
    shutil.copytree(resource_dir("problems") / "bin_packing", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _add_line(path: Path, after: str, line: str) -> None:
    text = path.read_text()
    head, _, tail = text.partition(after)
    assert tail, f"{after!r} not in {path}"
    end = tail.index("\n") + 1
    path.write_text(head + after + tail[:end] + line + "\n" + tail[end:])


@pytest.mark.parametrize(("ending", "says"), [
    ("import sys\nsys.exit(3)\n", "importing it failed: SystemExit: 3 (at score.py:"),
    ("raise ImportError('no module named tables')\n",
     "importing it failed: ImportError: no module named tables (at score.py:"),
])
def test_a_scorer_that_fails_at_import_is_named(tmp_path: Path, ending: str, says: str) -> None:
    folder = _copy_of_bin_packing(tmp_path)
    with (folder / "score.py").open("a") as f:
        f.write(ending)
    config, _ = load_run_config([f"problem={folder}"])
    with pytest.raises(ProblemError) as error:
        Problem(config.problem)
    assert str(error.value).startswith(f"{folder / 'score.py'}: ")
    assert says in str(error.value) and "\n" not in str(error.value)


def test_load_instances_failing_is_named_with_its_split_and_line(tmp_path: Path) -> None:
    folder = _copy_of_bin_packing(tmp_path)
    _add_line(folder / "score.py", "def load_instances(",
              "    raise ValueError('the data file is truncated')")
    result = subprocess.run(
        [sys.executable, "-m", "evoengine.cli", "run", f"problem={folder}", "ui=plain",
         "sandbox=process", "search.max_evaluations=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"evo: error: {folder / 'score.py'}: load_instances('train') "
                              "failed: ValueError: the data file is truncated (at score.py:")


def test_a_resumed_run_whose_problem_folder_moved_says_so(run_evo, tmp_path: Path) -> None:
    """It said the seed file was missing; the folder is what went, and problem.path on
    `evo resume` takes the new place."""
    assert run_evo("new-problem", "moving").returncode == 0
    first = run_evo("run", "problem=moving", "sandbox=process", "ui=plain",
                    "search.max_evaluations=3", "name=m")
    assert first.returncode == 0, first.stderr
    (tmp_path / "problems" / "moving").rename(tmp_path / "elsewhere")
    gone = run_evo("resume", "runs/m", "search.max_evaluations=5")
    assert gone.returncode == 2
    assert gone.stderr.strip() == (
        f"evo: error: problem.path: the folder of problem 'moving', "
        f"{tmp_path / 'problems' / 'moving'}, is gone; put it back, or give its new place "
        "with problem.path=DIR")
    moved = run_evo("resume", "runs/m", "search.max_evaluations=5",
                    f"problem.path={tmp_path / 'elsewhere'}")
    assert moved.returncode == 0, moved.stderr


def test_numpy_numbers_and_nan_in_metrics_and_features_are_stored(run_evo, tmp_path: Path
                                                                  ) -> None:
    """A scorer's metrics as numpy computes them (an int64 stopped the run with a
    traceback when stored) and NaN (PostgreSQL's JSON refuses it) are stored as floats
    and nulls; a metric of another type is the scorer's bug, named in one line."""
    assert run_evo("new-problem", "npmetrics").returncode == 0
    score = tmp_path / "problems" / "npmetrics" / "score.py"
    text = score.read_text()
    assert 'metrics={"mse": mse},' in text
    score.write_text(text.replace('metrics={"mse": mse},', 'metrics={"mse": mse, '
                                  '"n": __import__("numpy").int64(len(errors)), '
                                  '"undefined": float("nan")},'))
    run = run_evo("run", "problem=npmetrics", "sandbox=process", "ui=plain",
                  "search.max_evaluations=3", "name=np")
    assert run.returncode == 0, run.stderr
    db = tmp_path / "runs" / "np" / "archive.db"
    with sqlite3.connect(db) as conn:
        metrics = json.loads(conn.execute("SELECT metrics FROM programs "
                                          "WHERE id = 1").fetchone()[0])
    assert metrics["n"] == 20.0 and metrics["undefined"] is None
    score.write_text(text.replace('metrics={"mse": mse},', 'metrics={"mse": [mse]},'))
    broken = run_evo("run", "problem=npmetrics", "sandbox=process", "ui=plain",
                     "search.max_evaluations=3", "name=broken")
    assert broken.returncode == 2
    assert broken.stderr.strip().endswith(
        "invalid output: the scorer rejected it (TypeError: score() gave metrics['mse'] as "
        "list; give a number)")
    score.write_text(text.replace("feedback=f", "feedback=None and f"))  # a traceback too
    no_text = run_evo("run", "problem=npmetrics", "sandbox=process", "ui=plain",
                      "search.max_evaluations=3", "name=no_text")
    assert no_text.returncode == 2 and no_text.stderr.strip().endswith(
        "(TypeError: score() gave feedback as NoneType; give a string)")
