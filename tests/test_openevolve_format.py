"""OpenEvolve-format dirs (initial_program.py + evaluator.py) run unchanged.

Each test writes a small dir in OpenEvolve's format and runs it through the real
`evo` command and the real (process) sandbox.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from evoengine.config.compose import load_run_config
from tests.conftest import archive_rows

UNTRUSTED = "score computed inside the sandbox by the problem's own evaluator (untrusted)"

PROGRAM = '''\
import math


def target_value():
    """The evolved guess; the evaluator rewards closeness to 3."""
    return 2.0 * math.sqrt(1.0)
'''

# Reads a data file and imports a helper module beside itself, as OpenEvolve's
# examples do, and loads the program from the path it is given.
EVALUATOR = '''\
import importlib.util
import json
import os

from helper import closeness


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    with open(os.path.join(os.path.dirname(__file__), "data.json")) as f:
        target = json.load(f)["target"]
    value = program.target_value()
    return {"combined_score": closeness(value, target), "value": value, "note": "ok"}
'''

HELPER = "def closeness(value, target):\n    return 1.0 / (1.0 + abs(value - target))\n"

CASCADE_EVALUATOR = '''\
from openevolve.evaluation_result import EvaluationResult


def evaluate(program_path):
    raise AssertionError("with stages and cascade on, evaluate() is not called")


def evaluate_stage1(program_path):
    return {"combined_score": 0.4, "stage1_metric": 1.0}


def evaluate_stage2(program_path):
    return EvaluationResult(metrics={"combined_score": 0.8, "stage2_metric": 2.0},
                            artifacts={"stderr": "stage two ran"})


def evaluate_stage3(program_path):
    raise RuntimeError("stage three is broken")
'''


def write_dir(folder: Path, evaluator: str, program: str = PROGRAM,
              config: str | None = None, extra: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "initial_program.py").write_text(program)
    (folder / "evaluator.py").write_text(evaluator)
    if config is not None:
        (folder / "config.yaml").write_text(textwrap.dedent(config))
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    return write_dir(tmp_path / "oe_plain", EVALUATOR,
                     extra={"helper.py": HELPER, "data.json": json.dumps({"target": 3.0})})


def test_a_plain_dir_evaluates_with_its_own_evaluator(run_evo, plain_dir: Path) -> None:
    result = run_evo("eval", f"problem={plain_dir}",
                     f"program={plain_dir / 'initial_program.py'}", "sandbox=process")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "score    0.5\n" in result.stdout  # 1 / (1 + |2 - 3|)
    assert '"value": 2.0' in result.stdout
    assert UNTRUSTED in result.stdout
    assert "note: ok" in result.stdout  # non-numeric values come back as feedback


@pytest.mark.slow
def test_a_plain_dir_runs_and_the_whole_file_evolves(run_evo, plain_dir: Path,
                                                     tmp_path: Path) -> None:
    result = run_evo("run", f"problem={plain_dir}", "llm=gp", "search.max_evaluations=15",
                     "sandbox=process", "ui=plain", "name=oe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(UNTRUSTED) >= 2  # at the start and in the summary
    assert "no validation split" in result.stdout
    db = tmp_path / "runs" / "oe" / "archive.db"
    (seed_code, seed_score), = archive_rows(
        db, "SELECT code, score FROM programs WHERE operator = 'initial'")
    # No EVOLVE-BLOCK markers in the dir: the whole file is the block.
    assert seed_code.startswith("# EVOLVE-BLOCK-START\n" + PROGRAM)
    assert seed_code.endswith("# EVOLVE-BLOCK-END\n") and seed_score == 0.5
    splits = {row[0] for row in archive_rows(db, "SELECT DISTINCT split FROM evaluations")}
    assert splits == {"train"}
    assert (plain_dir / "initial_program.py").read_text() == PROGRAM  # left unchanged


CASCADE_CONFIG = """\
    evaluator:
      timeout: 20
      cascade_evaluation: true
      cascade_thresholds: [{first}, 0.7]
    prompt:
      system_message: "Find the number three."
    """


@pytest.mark.parametrize("first,score,stage", [(0.5, 0.4, 1), (0.3, 0.8, 2)])
def test_a_cascade_stops_below_its_threshold(run_evo, tmp_path: Path, first: float,
                                             score: float, stage: int) -> None:
    folder = write_dir(tmp_path / "oe_cascade", CASCADE_EVALUATOR,
                       config=CASCADE_CONFIG.format(first=first))
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"score    {score}\n" in result.stdout
    assert f'"cascade_stage": {float(stage)}' in result.stdout
    if stage == 2:
        # stage 3 ran (0.8 >= 0.7) and raised: stage 2's metrics stand, the failure noted
        assert '"stage3_passed": 0.0' in result.stdout
        assert "stage two ran" in result.stdout and "stage three is broken" in result.stdout


def test_config_yaml_sets_timeouts_and_description(tmp_path: Path) -> None:
    folder = write_dir(tmp_path / "oe_cfg", CASCADE_EVALUATOR,
                       config=CASCADE_CONFIG.format(first=0.5))
    config, _ = load_run_config([f"problem={folder}"])
    problem = config.problem
    assert problem.timeout_s == 60.0  # 20 s per call, three stages
    assert problem.description == "Find the number three."
    assert problem.splits["train"].spec["thresholds"] == [0.5, 0.7]
    assert not problem.trusted_score and not problem.candidate_process
    assert problem.evolve_whole_file


@pytest.mark.parametrize("body,kind,message", [
    ("raise ValueError('the evaluator broke')", "crash", "the evaluator broke"),
    ("return {'score': 1.0}", "invalid_output", "no combined_score"),
    ("return {'combined_score': float('nan')}", "invalid_output", "not a finite number"),
    ("return {'combined_score': float('inf')}", "invalid_output", "not a finite number"),
    # a text score read "no combined_score (metrics: none); artifacts: combined_score: high"
    ("return {'combined_score': 'high'}", "invalid_output",
     "the evaluator returned combined_score as 'high', not a number; return it as a float"),
    ("return {'combined_score': '0.7'}", "invalid_output", "combined_score as '0.7', not a"),
    ("return 0.9", "crash", "not a dict of metrics"),
])
def test_a_broken_evaluator_makes_an_invalid_program(run_evo, tmp_path: Path, body: str,
                                                     kind: str, message: str) -> None:
    folder = write_dir(tmp_path / "oe_broken", f"def evaluate(program_path):\n    {body}\n")
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"invalid  ({kind})" in result.stdout
    assert message in result.stdout


# Valid for the seed (value 2.0); for any other value it raises, returns NaN or
# returns no combined_score, by turns.
FLAKY_EVALUATOR = '''\
import importlib.util


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    value = program.target_value()
    if value == 2.0:
        return {"combined_score": 0.5}
    bucket = int(abs(value) * 1000) % 3
    if bucket == 0:
        raise RuntimeError("evaluator failure")
    if bucket == 1:
        return {"combined_score": float("nan")}
    return {"other": 1.0}
'''


@pytest.mark.slow
def test_a_run_survives_an_evaluator_that_breaks(run_evo, tmp_path: Path) -> None:
    folder = write_dir(tmp_path / "oe_flaky", FLAKY_EVALUATOR)
    result = run_evo("run", f"problem={folder}", "llm=gp", "search.max_evaluations=12",
                     "sandbox=process", "ui=none", "name=flaky")
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "runs" / "flaky" / "archive.db"
    errors = {row[0] for row in archive_rows(db, "SELECT error FROM evaluations")}
    assert None in errors  # the seed
    assert errors - {None} <= {"crash", "invalid_output", "syntax"}
    assert errors & {"crash", "invalid_output"}


def test_too_many_files_is_a_one_line_error(run_evo, tmp_path: Path) -> None:
    folder = write_dir(tmp_path / "oe_big", EVALUATOR.replace("from helper", "from h"),
                       extra={"big.bin": ""})
    (folder / "big.bin").write_bytes(b"\0" * (5 * 1024 * 1024))
    result = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}",
                     "sandbox=process")
    assert result.returncode == 2
    assert "big.bin" in result.stderr and "max_files_mb" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_evo_problems_lists_openevolve_dirs(run_evo, tmp_path: Path) -> None:
    write_dir(tmp_path / "problems" / "oe_listed", EVALUATOR)
    result = run_evo("problems")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("oe_listed"))
    assert "OpenEvolve format, untrusted score" in line


@pytest.mark.parametrize("setting,message", [
    ("timeout: 1.0e+308", "evaluator.timeout must be a number from 0.001 to 86400"),
    ("timeout: .nan", "evaluator.timeout must be a number"),
    ("timeout: 0", "evaluator.timeout must be a number"),
    ("memory_limit_mb: 0.5", "evaluator.memory_limit_mb must be a number from 1 to"),
    ("memory_limit_mb: '2048'", "evaluator.memory_limit_mb must be a number"),
    ('cascade_evaluation: "false"', "evaluator.cascade_evaluation must be true or false"),
    ("cascade_thresholds: [0.5, .nan]", "cascade_thresholds must be a list of finite"),
    ("cascade_thresholds: [0.5, .inf]", "cascade_thresholds must be a list of finite"),
])
def test_config_yaml_out_of_range_is_a_one_line_error(run_evo, tmp_path: Path, setting: str,
                                                      message: str) -> None:
    """A value OpenEvolve's own loader would take but the sandbox cannot honour (a
    timeout past what a CPU limit can hold, memory that rounds to none, a quoted
    "false" that Python reads as true, a threshold no score can pass) is refused when
    the run starts, in one line, before anything is stored."""
    folder = write_dir(tmp_path / "oe_bad", EVALUATOR, config=f"evaluator:\n  {setting}\n",
                       extra={"helper.py": HELPER, "data.json": json.dumps({"target": 3.0})})
    result = run_evo("run", f"problem={folder}", "search.max_evaluations=2",
                     f"runs_dir={tmp_path / 'runs'}", "name=bad")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs" / "bad" / "archive.db").exists()


def test_config_yaml_quoted_false_is_read_as_written(tmp_path: Path) -> None:
    folder = write_dir(tmp_path / "oe_flag", CASCADE_EVALUATOR,
                       config="evaluator:\n  cascade_evaluation: false\n  timeout: 20\n")
    config, _ = load_run_config([f"problem={folder}"])
    assert config.problem.splits["train"].spec["cascade"] is False
    assert config.problem.timeout_s == 20.0  # one call: no stages run


def test_a_resume_after_the_evaluator_broke_stops_before_any_step(
        run_evo, plain_dir: Path, tmp_path: Path) -> None:
    """`evo run` refused an evaluator.py that does not parse, but `evo resume` did not
    look again: every child crashed on it and the budget was spent."""
    first = run_evo("run", f"problem={plain_dir}", "llm=gp", "search.max_evaluations=3",
                    "sandbox=process", "ui=none", "name=oe")
    assert first.returncode == 0, first.stderr
    db = tmp_path / "runs" / "oe" / "archive.db"
    before = archive_rows(db, "SELECT count(*) FROM evaluations")
    (plain_dir / "evaluator.py").write_text(EVALUATOR.replace("def evaluate(program_path):",
                                                              "def evaluate(program_path)"))
    resumed = run_evo("resume", "runs/oe", "search.max_evaluations=12")
    assert resumed.returncode == 2, resumed.stdout
    assert resumed.stderr == (f"evo: error: {plain_dir / 'evaluator.py'} does not parse: "
                              "expected ':' (line 8); fix it\n")
    assert archive_rows(db, "SELECT count(*) FROM evaluations") == before


@pytest.mark.parametrize("evaluator,says", [
    ("def evaluate(program_path):\n    return None\n",
     "TypeError: the evaluator returned NoneType"),
    ("import not_installed_anywhere\n\n\ndef evaluate(program_path):\n    return {}\n",
     "No module named 'not_installed_anywhere' (at evaluator.py:1"),
])
def test_a_seed_failing_in_the_evaluator_points_at_it(run_evo, tmp_path: Path,
                                                      evaluator: str, says: str) -> None:
    """The hint for a problem's own harness ("it broke in the problem's harness.py")
    was given for the engine's OpenEvolve adapter, a file the user does not have."""
    folder = write_dir(tmp_path / "oe_bug", evaluator)
    run = run_evo("run", f"problem={folder}", "llm=gp", "search.max_evaluations=3",
                  "sandbox=process", "ui=none", "name=oe_bug")
    assert run.returncode == 2, run.stdout
    message = run.stderr.strip()
    assert says in message and "harness.py: check it" not in message, message
    assert message.endswith("; it broke in the problem's evaluator.py, not necessarily in "
                            "the seed: check evaluate() and what it imports and returns "
                            "(runs/oe_bug is kept as a failed run: after the fix, "
                            "`evo resume runs/oe_bug` continues it)"), message


def test_an_empty_program_is_named_as_such(run_evo, tmp_path: Path) -> None:
    folder = write_dir(tmp_path / "oe_empty", EVALUATOR, program="# nothing yet\n")
    run = run_evo("eval", f"problem={folder}", f"program={folder / 'initial_program.py'}")
    assert run.returncode == 2
    assert run.stderr == (f"evo: error: {folder / 'initial_program.py'}: it holds no code, so "
                          "there is nothing to evolve; put the code to evolve (at least the "
                          "function the search changes) in it\n")
