"""The config tree: overrides compose, and mistakes fail early with one line naming the key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from evoengine.config.compose import ConfigError, apply_overrides, load_run_config, to_run_config
from evoengine.config.schema import MAX_NAME_LENGTH, RunConfig
from evoengine.paths import resource_dir


def test_overrides_reach_the_typed_config() -> None:
    config, _ = load_run_config(["problem=bin_packing", "search.max_evaluations=300", "seed=1",
                                 "llm=gp", "search.selection=tournament"])
    assert config.problem.name == "bin_packing"
    assert config.search.max_evaluations == 300
    assert config.seed == 1
    assert config.llm.provider == "gp"
    assert config.search.selection == "tournament"
    assert Path(config.problem.path or "").is_dir()


@pytest.mark.parametrize(("override", "key"), [
    ("search.max_evaluatons=3", "search.max_evaluatons"),  # misspelt key
    ("+search.extra=3", "search.extra"),  # appended key that no code reads
    ("+unknown=1", "unknown"),
    ("search.max_evaluations=abc", "search.max_evaluations"),  # wrong type
    ("search.max_evaluations=0", "search.max_evaluations"),  # out of range
    ("search.selection=roulette", "search.selection"),
    ("sandbox.pool_size=0", "sandbox.pool_size"),
    ("problem.timeout_s=-1", "problem.timeout_s"),
    ("problem.timeout_s=inf", "problem.timeout_s"),  # overflowed the sandbox's limits
    ("problem.score_timeout_s=0", "problem.score_timeout_s"),
    ("seed=99999999999999999999999", "seed"),  # past SQLite's INTEGER: a traceback
    ("search.num_islands=1000000", "search.num_islands"),  # a million seed copies
    ("llm=nonexistent", "llm"),
    ("llm.base_url=localhost:8000/v1", "llm.base_url"),  # no scheme: never reachable
    ("llm.max_reply_chars=10", "llm.max_reply_chars"),  # would refuse every real reply
    ("db=postgres", "db.url"),  # the server must be given (it used to fall back to SQLite)
    ("problem=not_a_problem", "problem"),
    ("problem=", "problem"),  # ran into "problem/: no such config option"
    ("runs_dir=", "runs_dir"),  # ran the run into the current folder
    ("name=" + "a" * 300, "name"),  # "File name too long"
    ("rl.lora_targets=null", "rl.lora_targets"),
])
def test_bad_input_fails_with_one_line_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_run_config([override])
    message = str(error.value)
    assert "\n" not in message
    assert key in message


@pytest.mark.parametrize(("override", "message"), [
    ("mutation.novelty=maybe", "mutation.novelty: 'maybe' is not a valid bool; use true or false"),
    ("mutation.novelty=[1]", "mutation.novelty: '[1]' is not a valid bool; use true or false"),
    ("search.max_cost={a:1}", "search.max_cost: \"{'a': 1}\" is not a valid Float"),
    ("search.max_cost=abc", "search.max_cost: 'abc' is not a valid Float"),
    # a config group given something that is not one of its files (Hydra's message for
    # the first named neither the group nor the choices)
    ("search=3", "search: no option '3'; choose one of default (e.g. search=default), "
                 "or set its keys as search.KEY=VALUE"),
    ("sandbox=[process,docker]", "sandbox: no option '[process,docker]'; choose one of auto, "
                                 "docker, process (e.g. sandbox=auto), or set its keys as "
                                 "sandbox.KEY=VALUE"),
    # a list of names where the schema wants mappings ("Error merging override")
    ("llm.models=[a,b]", "llm.models[0]: 'a' must be a mapping with keys model, weight, "
                         "base_url, api_key_env, price_input_per_mtok, price_output_per_mtok; "
                         "e.g. {model: NAME, weight: 2}"),
    ("llm.edit_probabilities=x", "llm.edit_probabilities: 'x' must be a mapping with keys "
                                 "diff, full, crossover"),
    # two overrides in one argument, and a sweep: Hydra's words named neither
    ("search.seed=1 name=x", "search.seed=1 name=x: cannot read this override (mismatched "
                             "input '=' expecting <EOF>); write KEY=VALUE, one per argument, "
                             "and quote a value that holds spaces, brackets or characters "
                             "such as ~ # ? = (KEY='VALUE')"),
    ("llm.templates_dir=~/t", "llm.templates_dir=~/t: cannot read this override (unexpected "
                              "'~' at character 19); write KEY=VALUE, one per argument, and "
                              "quote a value that holds spaces, brackets or characters such "
                              "as ~ # ? = (KEY='VALUE')"),
    ("search.num_islands=2,3", "search.num_islands=2,3: a run takes one value per key; write "
                               "a list in brackets ([a,b]) or quote a value that holds a comma"),
    # null for a key that cannot be null: Hydra said "Error merging override ..."
    ("search.max_evaluations=null", "search.max_evaluations: cannot be null; give it a whole "
                                    "number (int), e.g. search.max_evaluations=1000 (the "
                                    "default)"),
    ("mutation.novelty=null", "mutation.novelty: cannot be null; give it true or false, e.g. "
                              "mutation.novelty=false (the default)"),
    ("search.code_length=null", "search.code_length: cannot be null; give it a mapping with "
                                "keys name, min, max, bins, or leave the override out"),
    ("llm.models=null", "llm.models: cannot be null; give it a list in brackets ([a,b]; [] for "
                        "none), or leave the override out"),
    ("problem.splits.train=null", "problem.splits.train: cannot be null; give it a mapping "
                                  "with keys spec, or leave the override out"),
    ("problem=", "problem: no problem given; give a problem name (problem=bin_packing; `evo "
                 "problems` lists them) or a problem folder (problem=path/to/dir)"),
    ("problem=''", "problem: no problem given; give a problem name (problem=bin_packing; `evo "
                   "problems` lists them) or a problem folder (problem=path/to/dir)"),
    ("runs_dir=", "runs_dir: is empty; give the folder that holds the runs, e.g. "
                  "runs_dir=runs (runs_dir=. for this one)"),
    ("name=" + "a" * (MAX_NAME_LENGTH + 1), f"name: is {MAX_NAME_LENGTH + 1} characters long; "
                                            f"give at most {MAX_NAME_LENGTH} (it names the "
                                            "run's folder)"),
])
def test_a_value_of_the_wrong_type_is_named_with_the_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_run_config([override])
    assert str(error.value) == message


def test_a_broken_problem_folder_stops_only_its_own_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "problems" / "broken"
    broken.mkdir(parents=True)
    (broken / "problem.yaml").write_text("name: broken\nsplits: [unclosed\n")
    monkeypatch.chdir(tmp_path)  # ./problems is searched first
    config, _ = load_run_config(["problem=tsp"])
    assert config.problem.name == "tsp"
    assert load_run_config([])[0].problem.name == "bin_packing"  # the default
    assert load_run_config(["problem=bin_packing_quick"])[0].problem.name == "bin_packing"
    with pytest.raises(ConfigError) as error:
        load_run_config(["problem=broken"])
    assert str(error.value) == (f"{broken / 'problem.yaml'}: not valid YAML at line 3, "
                                "column 1: expected ',' or ']', but got '<stream end>'; "
                                "fix the file")
    (broken / "problem.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="problem.yaml: must be a mapping of problem keys"):
        load_run_config(["problem=broken"])


def test_problem_given_as_a_directory(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[1] / "problems" / "bin_packing"
    copy = tmp_path / "my_packing"
    copy.mkdir()
    for name in ("problem.yaml", "initial.py", "harness.py", "score.py"):
        (copy / name).write_text((source / name).read_text())
    config, _ = load_run_config([f"problem={copy}"])
    assert config.problem.name == "my_packing"
    assert Path(config.problem.path or "") == copy.resolve()


def test_a_quoted_problem_value_is_read_without_its_quotes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error for a path with spaces advises KEY='VALUE'; the quotes were kept and the
    problem was unknown ("'problems/demo'")."""
    source = Path(__file__).resolve().parents[1] / "problems" / "bin_packing"
    folders = [tmp_path / "problems" / "demo", tmp_path / "my problems" / "demo",
               tmp_path / "my problems" / "my demo"]
    for folder in folders:
        folder.mkdir(parents=True)
        for name in ("problem.yaml", "initial.py", "harness.py", "score.py"):
            (folder / name).write_text((source / name).read_text())
    monkeypatch.chdir(tmp_path)
    for override, folder in (("problem='problems/demo'", folders[0]),
                             ('problem="problems/demo"', folders[0]),
                             ("problem='demo'", folders[0]),
                             (f"problem='{folders[1]}'", folders[1]),
                             (f"problem='{folders[2]}'", folders[2]),  # a name with a space
                             (f"problem={folders[2]}", folders[2])):
        config, _ = load_run_config([override])
        assert (config.problem.name, config.problem.path) == (folder.name, str(folder)), override
    config, _ = load_run_config(["problem='bin_packing_quick'", "llm='gp'"])
    assert (config.problem.name, config.llm.provider) == ("bin_packing", "gp")
    with pytest.raises(ConfigError, match="^problem: unknown problem 'nope'; known: "):
        load_run_config(["problem='nope'"])


def test_a_problem_path_that_is_no_folder_says_so(tmp_path: Path, monkeypatch) -> None:
    """A file of the problem (its evaluator.py, problem.yaml) or a folder that is not
    there was an "unknown problem" with the list of known names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "oe").mkdir()
    (tmp_path / "oe" / "evaluator.py").write_text("def evaluate(path):\n    return {}\n")
    with pytest.raises(ConfigError) as error:
        load_run_config(["problem=oe/evaluator.py"])
    assert str(error.value) == ("problem: oe/evaluator.py is a file; give the problem's "
                                "folder (problem=oe)")
    with pytest.raises(ConfigError) as error:
        load_run_config(["problem=./problems/nope"])
    assert str(error.value) == (f"problem: no folder ./problems/nope (from {tmp_path}); give a "
                                "problem folder's path or a name that `evo problems` lists")


@pytest.mark.parametrize(("line", "says"), [
    ("timeout_s: null", "timeout_s: cannot be null; give it a number (float), e.g. "
                        "timeout_s: 60.0 (the default)"),
    ("entry: null", "entry: cannot be null; give it a string (it has no default)"),
    ("preload: null", "preload: cannot be null; give it a list in brackets ([a,b]; [] for "
                      "none), or leave it out"),
])
def test_null_in_a_problem_yaml_names_the_type(tmp_path: Path, line: str, says: str) -> None:
    """It was OmegaConf's "Incompatible value 'None' for field of type 'float'"."""
    from evoengine.config.problem_folders import load_problem_yaml

    folder = tmp_path / "demo"
    shutil.copytree(resource_dir("problems") / "bin_packing", folder,
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    yaml_path = folder / "problem.yaml"
    key = line.split(":")[0]
    kept = [row for row in yaml_path.read_text().splitlines() if not row.startswith(f"{key}:")]
    yaml_path.write_text("\n".join(kept + [line]) + "\n")
    with pytest.raises(ConfigError) as error:
        load_problem_yaml(folder)
    assert str(error.value) == f"{yaml_path}: {says}"


def test_name_null_in_a_problem_yaml_is_the_folder_name(tmp_path: Path) -> None:
    """``name:`` may be left out (the folder names the problem); null is the same."""
    from evoengine.config.problem_folders import load_problem_yaml

    folder = tmp_path / "demo"
    shutil.copytree(resource_dir("problems") / "bin_packing", folder,
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    yaml_path = folder / "problem.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("name: bin_packing", "name: null"))
    assert load_problem_yaml(folder).name == "demo"


def test_null_on_resume_names_the_type() -> None:
    """`evo resume RUN KEY=null` merges onto the stored, typed config: OmegaConf said
    "Incompatible value 'None' for field of type 'int'"."""
    stored = OmegaConf.merge(OmegaConf.structured(RunConfig),
                             {"problem": {"name": "p", "entry": "f"}})
    with pytest.raises(ConfigError) as error:
        apply_overrides(stored, ["search.max_evaluations=null"])
    assert str(error.value) == ("search.max_evaluations: cannot be null; give it a whole number "
                                "(int), e.g. search.max_evaluations=1000 (the default)")


def test_a_long_name_is_refused_for_a_new_run_only() -> None:
    """name= over MAX_NAME_LENGTH ended in "File name too long"; a run that already has a
    longer name (from an older version, or a long problem name) still resumes."""
    assert load_run_config(["name=" + "a" * MAX_NAME_LENGTH])[0].name == "a" * MAX_NAME_LENGTH
    _, node = load_run_config([])
    node.name = "a" * (MAX_NAME_LENGTH + 50)
    assert to_run_config(node).name == node.name


@pytest.mark.parametrize(("args", "says"), [
    (("search.max_evaluations=null",), "search.max_evaluations: cannot be null; give it a "
                                       "whole number (int)"),
    (("problem=",), "problem: no problem given; give a problem name"),
    (("runs_dir=",), "runs_dir: is empty; give the folder that holds the runs"),
    (("name=" + "a" * 300,), "name: is 300 characters long; give at most"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(
        run_evo, tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    # a quick run if the bad input were let through
    done = run_evo("run", "problem=bin_packing_quick", "llm=gp", "sandbox=process", "ui=none",
                   "search.max_evaluations=1", "search.validate_top=0", *args)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(f"evo: error: {says}") and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_eval_reads_quoted_program_and_split(run_evo, tmp_path: Path) -> None:
    """`evo eval` takes program= and split= itself: quotes were kept there too."""
    source = Path(__file__).resolve().parents[1] / "problems" / "bin_packing" / "initial.py"
    program = tmp_path / "my dir" / "initial.py"
    program.parent.mkdir()
    program.write_text(source.read_text())
    done = run_evo("eval", "problem='bin_packing_quick'", f"program='{program}'", "split='train'")
    assert done.returncode == 0, done.stderr
    assert f"problem bin_packing, split train, program {program}" in done.stdout


@pytest.mark.parametrize(("command", "required", "enough"), [
    ("train", "source", ["runs/x"]),
    ("resume", "run_dir", ["runs/x"]),
    ("export", "source, --format", ["runs/x", "--format", "sft"]),
])
def test_optional_overrides_are_not_listed_as_required(
        command: str, required: str, enough: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """argparse (before Python 3.13) marks nargs="*" without a default as required: a
    missing SOURCE said "required: source, rl.KEY=VALUE", though overrides are optional."""
    from evoengine.cli.main import parse_args

    with pytest.raises(SystemExit):
        parse_args([command])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"the following arguments are required: {required}")
    assert parse_args([command, *enough]).overrides == []


def test_cli_reports_bad_key_before_any_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evoengine.cli", "run", "search.nope=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "search.nope" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_a_runs_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "evoengine.cli", "run", "runs_dir=a_file", "name=x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("evo: error: runs_dir: cannot create a_file/x (Not a "
                                     "directory); give a folder you can write to, e.g. "
                                     "runs_dir=runs")


def test_seed_must_define_the_entry_function(tmp_path: Path) -> None:
    from evoengine.evaluation.problem import Problem, ProblemError

    config, _ = load_run_config(["problem=bin_packing", "problem.entry=heuristic"])
    with pytest.raises(ProblemError, match="defines no function 'heuristic'"):
        Problem(config.problem)


def test_a_problem_that_serves_a_model_to_candidates_refuses_ray() -> None:
    """The agent's model proxy lives on the controller's machine: Ray nodes cannot
    reach it, so executor=ray is refused before anything starts."""
    with pytest.raises(ConfigError, match="executor.kind: .*use executor=local"):
        load_run_config(["problem=agent", "executor=ray", "llm=openai"])


def test_the_stored_config_keeps_no_database_password() -> None:
    from evoengine.controller.setup import storable_config

    config, _ = load_run_config(["db=postgres",
                                 "db.url=postgresql+psycopg://evo:pw@127.0.0.1:5432/arch"])
    config.db.url += "?sslmode=require"
    assert storable_config(config)["db"]["url"] == \
        "postgresql+psycopg://evo@127.0.0.1:5432/arch?sslmode=require"
    config.db.url = "not a url"
    with pytest.raises(ConfigError, match="db.url is not a database URL"):
        storable_config(config)


def test_archives_that_cannot_hold_or_are_no_run_are_one_line(run_evo, tmp_path: Path) -> None:
    """An in-memory db.url ran and lost everything while suggesting `evo resume`; a file
    that is no database gave a traceback (and left a run folder that took the name); a
    damaged or empty archive.db gave a traceback on `evo resume` and `evo export`, and
    an empty one was given the schema by the very command that refused it."""
    (tmp_path / "notes.txt").write_text("not a database")
    for url, says in (("sqlite:///", "is an in-memory database"),
                      (f"sqlite:///{tmp_path / 'notes.txt'}", "cannot be read as an archive "
                       "(file is not a database)")):
        done = run_evo("run", "problem=bin_packing_quick", "name=r", f"db.url={url}")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert says in done.stderr
        assert not (tmp_path / "runs" / "r").exists()
    made = tmp_path / "runs" / "made"
    assert run_evo("run", "problem=bin_packing_quick", "llm=gp", "sandbox=process",
                   "ui=none", "name=made", "search.max_evaluations=2").returncode == 0
    damaged = bytearray((made / "archive.db").read_bytes())
    damaged[100:4096] = b"\xff" * 3996  # the first page, with the table of tables
    (made / "archive.db").write_bytes(bytes(damaged))
    for path in made.glob("archive.db-*"):
        path.unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "archive.db").write_bytes(b"")
    malformed = "cannot be read as an archive (database disk image is malformed)"
    for command, says in ((("resume", str(made)), malformed),
                          (("export", str(made), "--format", "sft"), malformed),
                          # an empty archive is what a start cut short leaves
                          (("resume", str(empty)), "holds no run: its start was cut short"),
                          (("export", str(empty), "--format", "sft"),
                           "is not an evoengine archive (no table 'runs')")):
        done = run_evo(*command)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert says in done.stderr
    assert (empty / "archive.db").read_bytes() == b""  # refused without a write
    assert sorted(p.name for p in empty.iterdir()) == ["archive.db"]


def test_a_problem_yaml_without_a_name_takes_the_folders(run_evo, tmp_path: Path) -> None:
    """The folder names the problem; a problem.yaml without `name:` gave a traceback
    (MissingMandatoryValue) instead of running."""
    assert run_evo("new-problem", "unnamed").returncode == 0
    folder = tmp_path / "problems" / "unnamed"
    yaml_path = folder / "problem.yaml"
    yaml_path.write_text("".join(line for line in yaml_path.read_text().splitlines(True)
                                 if not line.startswith("name:")))
    done = run_evo("eval", "problem=unnamed", f"program={folder / 'initial.py'}")
    assert done.returncode == 0, done.stderr
    assert "unnamed" in done.stdout
