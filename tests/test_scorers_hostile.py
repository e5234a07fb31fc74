"""The host-side scorers and problem loading against hostile outputs and bad input.

Malformed raw output must come back as InvalidOutput with a short message (never
another exception, never a giant feedback or metrics dict); a broken OpenEvolve-format
dir or an odd ``evo new-problem`` target must give a one-line error, not a traceback.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from evoengine.evaluation.problem import import_file
from evoengine.evaluation.scoring import InvalidOutput

ROOT = Path(__file__).resolve().parents[1]
tsp = import_file(ROOT / "problems" / "tsp" / "score.py", "review_tsp_score")
gls = import_file(ROOT / "problems" / "tsp_gls" / "score.py", "review_tsp_gls_score")
circles = import_file(ROOT / "problems" / "circle_packing" / "score.py", "review_cp_score")
oe = import_file(ROOT / "evaluators" / "openevolve" / "score.py", "review_oe_score")

HUGE = 10 ** 4000  # as large as JSON's int parsing lets through; too large for a float
SQUARE = [{"name": "sq", "group": "n4", "coords": [[0, 0], [1, 0], [1, 1], [0, 1]],
           "optimum": 4}]


def test_tsp_huge_node_message_stays_short() -> None:
    with pytest.raises(InvalidOutput, match="out of range") as caught:
        tsp.score([[0, 1, 2, HUGE]], SQUARE)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("dtype", ["(1000000000,1000000000)f8", "f8," * 1000 + "f8"])
def test_tsp_gls_odd_dtype_is_invalid_output(dtype: str) -> None:
    matrix = {"shape": [4, 4], "dtype": dtype,
              "data": base64.b64encode(np.ones((4, 4)).tobytes()).decode()}
    with pytest.raises(InvalidOutput, match="dtype"):
        gls.score([{"tour": [0, 1, 2, 3], "heuristics": matrix}], SQUARE)


@pytest.mark.parametrize("packing", [
    {"centers": [[HUGE, 0.5]], "radii": [0.1]},
    {"centers": [[0.5, 0.5]], "radii": [-HUGE]},
])
def test_circle_packing_huge_int_is_invalid_output(packing: dict) -> None:
    with pytest.raises(InvalidOutput, match="not a finite number"):
        circles.score([packing], [{"name": "n1", "n": 1}])


@pytest.mark.parametrize("outputs", [
    {"metrics": {"combined_score": HUGE}},
    {"metrics": {"combined_score": -HUGE}},
    {"metrics": {"combined_score": [0.5] * 100_000}},
])
def test_openevolve_huge_int_score_is_invalid_output(outputs: dict) -> None:
    with pytest.raises(InvalidOutput, match="not a finite number") as caught:
        oe.score(outputs, [{}])
    assert len(str(caught.value)) < 200


def test_openevolve_huge_int_metric_or_stage_is_dropped() -> None:
    result = oe.score({"metrics": {"combined_score": 0.5, "big": HUGE}, "stage": HUGE}, [{}])
    assert result.score == 0.5 and result.metrics == {"combined_score": 0.5}
    assert "big" in result.feedback


def test_openevolve_giant_metrics_and_names_are_bounded() -> None:
    long_name = "k" * 1_000_000
    metrics = {"combined_score": 0.5, long_name: 1.0, f"nan_{long_name}": float("nan"),
               **{f"m{i}": float(i) for i in range(100_000)}}
    result = oe.score({"metrics": metrics, "artifacts": {long_name: "note"}}, [{}])
    assert result.score == 0.5 and result.metrics["combined_score"] == 0.5
    assert len(result.metrics) == oe.MAX_METRICS + 1
    assert max(len(name) for name in result.metrics) <= oe.MAX_NAME_CHARS
    assert result.metrics["m0"] == 0.0  # the first ones, in the evaluator's order, stay
    assert len(result.feedback) < 5000
    with pytest.raises(InvalidOutput) as caught:
        oe.score({"metrics": {long_name: 1.0}}, [{}])
    assert len(str(caught.value)) < 1000


PROGRAM = "def f():\n    return 1.0\n"
EVALUATOR = "def evaluate(program_path):\n    return {'combined_score': 1.0}\n"


def _dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "oe_dir"
    folder.mkdir()
    for name, data in {"initial_program.py": PROGRAM.encode(),
                       "evaluator.py": EVALUATOR.encode(), **files}.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("name,data,message", [
    ("evaluator.py", EVALUATOR.encode() + b"# \xff\xfe\n", "evaluator.py is not UTF-8"),
    ("initial_program.py", PROGRAM.encode() + b"x = '\xff'\n", "initial_program.py is not UTF-8"),
    ("config.yaml", b"evaluator:\n  timeout: '\xff'\n", "config.yaml is not UTF-8"),
    ("evaluator.py", EVALUATOR.encode() + b"\0\n", "null bytes"),
])
def test_openevolve_unreadable_files_are_one_line_errors(run_evo, tmp_path: Path, name: str,
                                                         data: bytes, message: str) -> None:
    folder = _dir(tmp_path, {name: data})
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "line None" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_openevolve_symlinked_evaluator_is_a_one_line_error(run_evo, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text(EVALUATOR)
    folder = _dir(tmp_path, {})
    (folder / "evaluator.py").unlink()
    (folder / "evaluator.py").symlink_to(outside)
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "evaluator.py is a symlink" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_openevolve_giant_metrics_reach_the_engine_bounded(run_evo, tmp_path: Path) -> None:
    evaluator = ("def evaluate(program_path):\n"
                 "    metrics = {'m%d' % i: 1.0 for i in range(5000)}\n"
                 "    metrics['k' * 100000] = 2.0\n"
                 "    return {'combined_score': 0.25, **metrics}\n")
    folder = _dir(tmp_path, {"evaluator.py": evaluator.encode()})
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "score    0.25\n" in result.stdout
    assert "k" * 1000 not in result.stdout and '"m4999"' not in result.stdout
    assert len(result.stdout) < 20_000


def test_new_problem_over_a_dangling_symlink_is_refused(run_evo, tmp_path: Path) -> None:
    (tmp_path / "problems").mkdir()
    (tmp_path / "problems" / "mine").symlink_to(tmp_path / "nowhere")
    result = run_evo("new-problem", "mine")
    assert result.returncode == 2
    assert "already exists" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "nowhere").exists()


def test_new_problem_with_dir_a_file_is_refused(run_evo, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine\n")
    result = run_evo("new-problem", "mine", "--dir", "afile")
    assert result.returncode == 2
    assert "cannot create" in result.stderr and result.stderr.strip().count("\n") == 0
    assert (tmp_path / "afile").read_text() == "mine\n"
