"""A problem folder's own host-side code (score.py) failing: one-line errors that name
the file, the exception and its line, never a traceback or a silent exit."""

from __future__ import annotations

import shutil
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
