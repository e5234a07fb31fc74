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


def _refused_run(run_evo, tmp_path: Path, name: str, after: str, line: str) -> str:
    """`evo new-problem NAME`, ``line`` added to its score.py after ``after``, then a
    short `evo run` that must be refused: its one-line error."""
    assert run_evo("new-problem", name).returncode == 0
    _add_line(tmp_path / "problems" / name / "score.py", after, line)
    run = run_evo("run", f"problem={name}", "ui=plain", "sandbox=process",
                  "search.max_evaluations=3", f"name={name}")
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip()
    assert "\n" not in message, message
    return message


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
        "list; give a number) (runs/broken is kept as a failed run: after the fix, "
        "`evo resume runs/broken` continues it)")
    score.write_text(text.replace("feedback=f", "feedback=None and f"))  # a traceback too
    no_text = run_evo("run", "problem=npmetrics", "sandbox=process", "ui=plain",
                      "search.max_evaluations=3", "name=no_text")
    assert no_text.returncode == 2 and no_text.stderr.strip().endswith(
        "(TypeError: score() gave feedback as NoneType; give a string) (runs/no_text is kept "
        "as a failed run: after the fix, `evo resume runs/no_text` continues it)")


@pytest.mark.parametrize(("returned", "says"), [
    ("{'train': []}", "returned dict; return a list with one entry per instance"),
    ("'samples.json'", "returned str; return a list with one entry per instance"),
    ("None", "returned NoneType; return a list with one entry per instance"),
    ("[]", "returned no instances; a split needs at least one"),
    ("[{'x': object()}]", "returned instances that are not JSON data (Object of type "
                          "object is not JSON serializable)"),
])
def test_what_load_instances_returns_is_checked(tmp_path: Path, returned: str, says: str
                                                ) -> None:
    """Instances that no harness can be given were blamed on the seed program (a dict
    became its keys, an empty split divided by zero in the scorer), or failed the
    sandbox runner's start; now the scorer's file and split are named."""
    folder = _copy_of_bin_packing(tmp_path)
    _add_line(folder / "score.py", "def load_instances(", f"    return {returned}")
    config, _ = load_run_config([f"problem={folder}"])
    with pytest.raises(ProblemError) as error:
        Problem(config.problem).instances("train")
    message = str(error.value)
    assert message.startswith(f"{folder / 'score.py'}: load_instances('train') {says}")
    assert "\n" not in message


def test_a_split_that_cannot_load_stops_the_run_before_anything_is_stored(
        run_evo, tmp_path: Path) -> None:
    """Validation used to be loaded only after the whole search, and test not until
    `evo eval`; every split is now loaded before the run's folder is made."""
    message = _refused_run(run_evo, tmp_path, "late", "def load_instances(",
                           "    assert split != 'test', 'test.json is from another task'")
    assert message.startswith(
        f"evo: error: {tmp_path / 'problems' / 'late' / 'score.py'}: load_instances('test') "
        "failed: AssertionError: test.json is from another task (at score.py:"), message
    assert not (tmp_path / "runs" / "late").exists()


def test_an_evolve_block_without_code_is_refused(tmp_path: Path) -> None:
    """An empty block (the function moved below the end marker) left the search
    nothing to change: 1,000 no-op steps, then a run that "finished"."""
    folder = _copy_of_bin_packing(tmp_path)
    seed = folder / "initial.py"
    head, start, rest = seed.read_text().partition("# EVOLVE-BLOCK-START\n")
    body, end, tail = rest.partition("# EVOLVE-BLOCK-END")
    seed.write_text(f"{head}{start}  # only a comment\n\n{end}{tail}\n{body}")
    config, _ = load_run_config([f"problem={folder}"])
    with pytest.raises(ProblemError) as error:
        Problem(config.problem)
    assert str(error.value) == (
        f"{seed}: the EVOLVE-BLOCK holds no code, so there is nothing to evolve; put the "
        "code to evolve (at least the function the search changes) between the markers")


def test_a_scorer_that_breaks_inside_a_library_is_named_at_its_own_line(
        run_evo, tmp_path: Path) -> None:
    """An exception in score() is recorded as the output's fault (the documented
    design), now with the line of score.py that raised it rather than the library's
    (json's decoder here), so that a scorer's own bug shows where it is."""
    message = _refused_run(run_evo, tmp_path, "jsonbug", "def score(",
                           "    json.loads('not json')")
    score = tmp_path / "problems" / "jsonbug" / "score.py"
    line = score.read_text().splitlines().index("    json.loads('not json')") + 1
    assert message.endswith(
        "invalid output: the scorer rejected it (JSONDecodeError: Expecting value: line 1 "
        f"column 1 (char 0) (at score.py:{line})) (runs/jsonbug is kept as a failed run: "
        "after the fix, `evo resume runs/jsonbug` continues it)"), message


def test_a_seed_failing_in_the_harness_points_at_it(run_evo, tmp_path: Path) -> None:
    """Instances of the wrong shape break the problem's harness, not the seed; the
    seed's error now says so."""
    message = _refused_run(run_evo, tmp_path, "shape", "def load_instances(",
                           "    return [1.0, 2.0]")
    assert "(at harness.py:" in message and message.endswith(
        "; it broke in the problem's harness.py: check it, and that load_instances returns "
        "what it expects (runs/shape is kept as a failed run: after the fix, "
        "`evo resume runs/shape` continues it)"), message


def test_a_seed_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """It was read with the locale's encoding and failed with a UnicodeDecodeError
    traceback."""
    folder = _copy_of_bin_packing(tmp_path)
    seed = folder / "initial.py"
    seed.write_bytes(seed.read_bytes().replace(b"best fit", b"best \xff fit", 1))
    config, _ = load_run_config([f"problem={folder}"])
    with pytest.raises(ProblemError) as error:
        Problem(config.problem)
    assert str(error.value).startswith(f"{seed} is not UTF-8 text (byte ")
    assert str(error.value).endswith("); save it as UTF-8")
