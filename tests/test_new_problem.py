"""`evo new-problem`: a scaffold that evaluates, runs and tests at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_scaffold_evaluates_runs_and_passes_its_test(run_evo, tmp_path: Path) -> None:
    made = run_evo("new-problem", "my_task")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "problems" / "my_task"
    for name in ("problem.yaml", "initial.py", "harness.py", "score.py",
                 "data/train.json", "data/validation.json", "data/test.json",
                 "test_my_task.py"):
        assert (folder / name).is_file(), name
    assert "# EVOLVE-BLOCK-START" in (folder / "initial.py").read_text()

    evaluated = run_evo("eval", "problem=my_task", "program=problems/my_task/initial.py",
                        "sandbox=process")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "score    " in evaluated.stdout

    ran = run_evo("run", "problem=my_task", "llm=gp", "search.max_evaluations=20",
                  "sandbox=process", "ui=none")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "train vs validation" in ran.stdout  # it has a validation split

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(folder / "test_my_task.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "passed" in tested.stdout and "failed" not in tested.stdout


def test_an_existing_folder_is_never_overwritten(run_evo, tmp_path: Path) -> None:
    folder = tmp_path / "problems" / "mine"
    folder.mkdir(parents=True)
    (folder / "score.py").write_text("# my work\n")
    result = run_evo("new-problem", "mine")
    assert result.returncode == 2
    assert "already exists" in result.stderr and result.stderr.strip().count("\n") == 0
    assert (folder / "score.py").read_text() == "# my work\n"
    assert sorted(p.name for p in folder.iterdir()) == ["score.py"]


@pytest.mark.parametrize(("name", "why"), [
    ("9lives", "not a valid problem name"), ("My-Task", "not a valid problem name"),
    ("class", "'class' is a Python keyword"), ("a/b", "not a valid problem name"),
    ("x" * 65, "not a valid problem name"), ("_x", "not a valid problem name")])
def test_a_bad_name_is_refused_in_one_line(run_evo, tmp_path: Path, name: str,
                                           why: str) -> None:
    result = run_evo("new-problem", name)
    assert result.returncode == 2
    assert why in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "problems").exists()


@pytest.mark.parametrize("name", ["bin_packing", "bin_packing_quick", "tsp"])
def test_the_name_of_an_own_problem_is_refused(run_evo, tmp_path: Path, name: str) -> None:
    result = run_evo("new-problem", name)  # it would replace the engine's problem here
    assert result.returncode == 2
    assert f"{name!r} is one of evoengine's own problems" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "problems").exists()


def test_dir_puts_the_problem_elsewhere(run_evo, tmp_path: Path) -> None:
    result = run_evo("new-problem", "far_task", "--dir", "lab/problems")
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "lab" / "problems" / "far_task"
    assert (folder / "problem.yaml").is_file()
    evaluated = run_evo("eval", f"problem={folder}", f"program={folder / 'initial.py'}",
                        "sandbox=process")
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
