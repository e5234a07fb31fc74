"""`evo problems`, `evo eval` and the dashboard, as a user sees them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from evoengine.controller.dashboard import render
from evoengine.controller.stats import RunStats

REPO = Path(__file__).resolve().parents[1]

FIRST_FIT = '''import numpy as np

def priority(item, bins):
    return -np.arange(len(bins))
'''


def test_problems_lists_one_line_each(run_evo) -> None:
    result = run_evo("problems")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("bin_packing ") for line in lines)


def test_problems_does_not_import_hydra(tmp_path: Path) -> None:
    """Listing problems reads their problem.yaml files; it used to import Hydra's
    composition (and with it Hydra and its grammar) for the loader alone."""
    import subprocess
    import sys

    probe = ("import sys\nfrom evoengine.cli.main import main\ncode = main(['problems'])\n"
             "tops = {m.split('.')[0] for m in sys.modules}\n"
             "print(code, sorted(tops & {'hydra', 'sqlalchemy'}))")
    listed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert listed.stdout.strip().splitlines()[-1] == "0 []", listed.stderr
    assert any(line.startswith("bin_packing ") for line in listed.stdout.splitlines())


def test_eval_scores_a_program_on_a_split(run_evo, tmp_path: Path) -> None:
    program = tmp_path / "first_fit.py"
    program.write_text(FIRST_FIT)
    result = run_evo("eval", "problem=bin_packing", f"program={program}", "split=validation")
    assert result.returncode == 0, result.stderr
    # first fit on OR3 is 5.74 % and on Weibull 5k 4.23 %: the score is minus their mean
    assert "score    -4.98" in result.stdout
    assert "excess_pct_or3" in result.stdout and "feedback" in result.stdout


def test_eval_reports_a_broken_program(run_evo, tmp_path: Path) -> None:
    program = tmp_path / "broken.py"
    program.write_text("def priority(item, bins):\n    return bins[\n")
    result = run_evo("eval", "problem=bin_packing", f"program={program}")
    assert result.returncode == 1
    assert "invalid  (syntax)" in result.stdout
    # named by the file given, not by the problem's initial.py the sandbox imports it as
    assert "(broken.py, line 2)" in result.stdout and "initial.py" not in result.stdout


def test_eval_shows_a_candidates_control_characters_as_escapes(run_evo, tmp_path: Path
                                                                ) -> None:
    """What a candidate prints reached the terminal raw: it could clear the screen or
    retitle the window of whoever ran `evo eval`."""
    program = tmp_path / "esc.py"
    program.write_text("import sys\n\ndef priority(item, bins):\n"
                       "    sys.stderr.write('\\x1b]0;title\\x07\\x1b[2J\\n')\n"
                       "    raise ValueError('\\x1b[31mred\\x1b[0m')\n")
    result = run_evo("eval", "problem=bin_packing_quick", f"program={program}",
                     "sandbox=process")
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "ValueError: \\x1b[31mred\\x1b[0m" in result.stdout
    assert "\\x1b]0;title\\x07\\x1b[2J" in result.stdout

def test_eval_bad_arguments_are_one_line(run_evo, tmp_path: Path) -> None:
    missing = run_evo("eval", "problem=bin_packing", "program=nope.py")
    assert missing.returncode == 2 and "program: nope.py is not a file" in missing.stderr
    (tmp_path / "p.py").write_text(FIRST_FIT)
    bad_split = run_evo("eval", "problem=bin_packing", "program=p.py", "split=holdout")
    assert bad_split.returncode == 2 and "split" in bad_split.stderr
    assert bad_split.stderr.strip().count("\n") == 0
    (tmp_path / "binary.py").write_bytes(b"\x7fELF\x02\xd0\xff")
    binary = run_evo("eval", "problem=bin_packing", "program=binary.py")
    assert binary.returncode == 2 and binary.stderr.strip().count("\n") == 0
    assert "program: binary.py is not UTF-8 text (byte 5)" in binary.stderr


def test_dashboard_shows_each_notice_as_given() -> None:
    """A member left out of an ensemble is a notice: in the panel, with the server's
    text shown as it is (no markup, control characters escaped)."""
    stats = RunStats("demo", "bin_packing", "a+b (ucb)", "process", max_evaluations=20)
    stats.notices.append("model b left out for the rest of this session: no [/x] \x1b]0;t")
    console = Console(record=True, width=160)
    console.print(render(stats))
    text = console.export_text()
    assert "note: model b left out for the rest of this session: no [/x] \\x1b]0;t" in text


def test_dashboard_shows_progress_best_rate_failures_and_top() -> None:
    stats = RunStats("demo", "bin_packing", "gp", "process", max_evaluations=200,
                     evaluations=50, session_evaluations=50, best_score=-3.25,
                     best_program_id=17)
    stats.failures["timeout"] = 4
    stats.cost, stats.prompt_tokens, stats.completion_tokens = 0.0123, 45_000, 6_000
    stats.top = [(17, -3.25, 1, "gp:grow")]
    console = Console(record=True, width=140)
    console.print(render(stats))
    text = console.export_text()
    assert "50/200 evaluations" in text
    assert "-3.2500" in text and "timeout 4" in text and "gp:grow" in text
    assert "eval/s" in text
    assert "cost $0.0123" in text and "tokens 45,000 in / 6,000 out" in text
    # names are shown as given: brackets in them used to be read as Rich markup
    stats.mutator, stats.run_name = "m[/x]", "run[bold]"
    console.print(render(stats))
    text = console.export_text()
    assert "mutator m[/x]" in text and "run[bold]" in text
    # ... and their control characters as escapes, not sent to the terminal
    stats.problem, stats.message = "p\x1b]0;title\x07", "server said \x1b[2J\u202e"
    console.print(render(stats))
    text = console.export_text()
    assert "\x1b" not in text and "\u202e" not in text
    assert "p\\x1b]0;title\\x07" in text and "server said \\x1b[2J\\u202e" in text


def test_plain_line_counts_the_steps_not_evaluated_and_names_the_commonest(capsys) -> None:
    from evoengine.controller.dashboard import Dashboard

    stats = RunStats("demo", "bin_packing", "openai", "process", max_evaluations=200,
                     evaluations=1, session_evaluations=1, best_score=-4.31)
    stats.outcomes.update({"llm_error:connection": 12, "noop": 2})
    with Dashboard(stats, "plain") as dashboard:
        dashboard.tick()
        stats.evaluations = 7
        dashboard.tick()  # within 5 s of the last line: nothing
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[1/200] best -4.3100 | ")
    assert "| failures 0 | not evaluated 14 (most: llm_error:connection 12) | cost $" in lines[0]
    # the end of the run prints the final counts (the last line could be 5 s old)
    assert len(lines) == 2 and lines[1].startswith("[7/200] best -4.3100 | ")


def test_evo_entry_turns_the_garbage_collector_back_on(tmp_path: Path) -> None:
    """`evo` starts with the collector off (cli.entry); every command must turn it back
    on: a search once it is set up (after gc.freeze), any other command at once."""
    import subprocess
    import sys

    probe = ("import gc, sys\nfrom evoengine.cli import entry\nimport evoengine.cli.run_cmd as rc\n"
             "seen = []\nreal = rc._drive\n"
             "async def spy(ctx, controller):\n"
             "    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
             "    return await real(ctx, controller)\n"
             "rc._drive = spy\nsys.argv = ['evo'] + sys.argv[1:]\ncode = entry()\n"
             "print(code, gc.isenabled(), seen)\n")
    problems = subprocess.run([sys.executable, "-c", probe, "problems"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert problems.stdout.strip().splitlines()[-1] == "0 True []", problems.stderr
    run = subprocess.run([sys.executable, "-c", probe, "run", "problem=bin_packing_quick",
                          "llm=gp", "sandbox=process", "search.max_evaluations=3",
                          "~problem.splits.validation", "~problem.splits.test",
                          "ui=plain", f"runs_dir={tmp_path}", "name=gc"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.stdout.strip().splitlines()[-1] == "0 True [(True, True)]", run.stderr


def test_browse_refuses_a_poll_interval_that_is_not_seconds(run_evo) -> None:
    """A negative or NaN --poll used to open the browser with polling silently off."""
    for value in ("-1", "nan", "soon"):
        result = run_evo("browse", "runs/any", "--poll", value)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"evo browse: error: argument --poll: {value!r} is not a number of seconds >= 0 "
            "(0: never look again)")


def test_help_imports_no_store_and_every_user_error_class_resolves() -> None:
    """`evo --help` used to import the store, the controller and the LLM types for their
    error classes (0.8 s, SQLAlchemy and Alembic included); they are looked up by module
    when caught now, so each entry must name a real exception class."""
    import importlib
    import subprocess
    import sys

    from evoengine.cli.main import USER_ERROR_CLASSES, is_user_error

    probe = ("import sys; from evoengine.cli.main import build_parser; build_parser(); "
             "print(sorted(m for m in ('sqlalchemy', 'alembic', 'hydra', 'openai') "
             "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert loaded.stdout.strip() == "[]"
    for module, name in USER_ERROR_CLASSES:
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, Exception)
        assert is_user_error(error.__new__(error))
    assert not is_user_error(RuntimeError("x"))


def test_the_commands_evo_suggests_work_when_pasted_into_a_shell(run_evo,
                                                                 tmp_path: Path) -> None:
    """`evo new-problem` and the end of a run suggest commands to run next; with a space
    in a folder's name (``my problems``, ``my runs``) they split into the wrong words
    when pasted. They are shell-quoted now, and here they are run as printed."""
    import shlex
    import subprocess

    from tests.conftest import evo_command

    def pasted(line: str) -> subprocess.CompletedProcess[str]:
        assert line.startswith("evo ")
        command = shlex.join(evo_command()) + line[len("evo"):]
        return subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    created = run_evo("new-problem", "toy", "--dir", "my problems")
    assert created.returncode == 0, created.stderr
    folder = tmp_path / "my problems" / "toy"
    hints = [line.strip() for line in created.stdout.splitlines() if line.startswith("  ")]
    assert hints[0] == "evo eval 'problem=my problems/toy' 'program=my problems/toy/initial.py'"
    assert pasted(hints[0]).returncode == 0
    ran = run_evo("run", f"problem={folder}", "llm=gp", "search.max_evaluations=3",
                  "ui=none", "runs_dir=my runs", "name=t")
    assert ran.returncode == 0, ran.stderr
    (following,) = [line for line in ran.stdout.splitlines() if line.startswith("next: ")]
    evaluate, resume = following[len("next: "):].split("  |  ")
    assert resume == "evo resume 'my runs/t' search.max_evaluations=N"
    assert pasted(evaluate).returncode == 0
    assert pasted(resume.replace("=N", "=4")).returncode == 0
