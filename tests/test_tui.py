"""`evo browse`: the Textual app driven headless by its pilot on real archives that a
short `evo run` writes (offline GP mutator, process sandbox). Assertions read what the
widgets hold, i.e. what a user sees."""

from __future__ import annotations

import asyncio
import html
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import DataTable, Static

from evoengine.tui import render
from evoengine.tui.app import BrowseApp
from evoengine.tui.queries import ArchiveReader, EvaluationRow, ProgramDetail
from evoengine.tui.screens.help import HelpScreen
from evoengine.tui.screens.program import ProgramScreen
from evoengine.tui.screens.run import RunScreen
from evoengine.tui.source import open_archive_engine
from evoengine.tui.widgets import GridView
from tests.conftest import archive_rows, evo_command

RUN_ARGS = ("run", "problem=bin_packing_quick", "llm=gp", "sandbox=process", "ui=none")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 40-evaluation run; returns its folder."""
    workdir = tmp_path_factory.mktemp("browse")
    done = subprocess.run(evo_command(*RUN_ARGS, "search.max_evaluations=40", "seed=3",
                                      "name=demo"), cwd=workdir, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return workdir / "runs" / "demo"


def text_of(widget: Static) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(widget.content)
    return console.export_text()


def make_app(run_dir: Path, poll_s: float = 0) -> BrowseApp:
    return BrowseApp(ArchiveReader(open_archive_engine(str(run_dir))), poll_s=poll_s)


def table_column(table: DataTable, index: int) -> list[str]:
    return [str(table.get_row_at(row)[index]) for row in range(table.row_count)]


def test_browse_sorts_opens_a_program_and_follows_its_parent(finished_run: Path) -> None:
    db = finished_run / "archive.db"
    best_id, best_score = archive_rows(db, "SELECT id, score FROM programs WHERE valid "
                                           "ORDER BY score DESC, id LIMIT 1")[0]
    total = archive_rows(db, "SELECT count(*) FROM programs")[0][0]

    async def drive() -> None:
        app = make_app(finished_run)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, RunScreen)  # one run: opened straight away
            assert "run demo" in text_of(screen.query_one("#headline", Static))
            table = screen.query_one("#program-rows", DataTable)
            assert table.get_row_at(0)[0] == str(best_id)  # best first by default
            assert f"of {total}" in text_of(screen.query_one("#status", Static))
            scores = [float(s) for s in table_column(table, 6) if s != "—"]
            assert scores == sorted(scores, reverse=True)

            # sort by id, newest first: the newest program has a parent to follow
            await pilot.click("#program-rows", offset=(2, 0))  # the "id" header
            await pilot.pause()
            ids = [int(i) for i in table_column(table, 0)]
            assert ids == sorted(ids, reverse=True) and ids[0] == total
            parent_id = archive_rows(db, f"SELECT parent_id FROM programs WHERE id={total}"
                                     )[0][0]

            await pilot.press("enter")
            await pilot.pause()
            detail = app.screen
            assert isinstance(detail, ProgramScreen) and detail.program.id == total
            headline = text_of(detail.query_one("#headline", Static))
            assert f"program #{total}" in headline and f"parent #{parent_id}" in headline
            diff = text_of(detail.query_one("#diff", Static))
            assert f"#{parent_id} (parent)" in diff or "same code as parent" in diff
            assert f"parent #{parent_id}" in text_of(detail.query_one("#metrics", Static))
            assert "train:" in text_of(detail.query_one("#feedback", Static))
            assert "EVOLVE-BLOCK-START" in text_of(detail.query_one("#code", Static))

            await pilot.press("p")  # follow the parent
            await pilot.pause()
            parent = app.screen
            assert isinstance(parent, ProgramScreen) and parent.program.id == parent_id
            await pilot.press("4")  # lineage: the child we came from is listed
            await pilot.pause()
            children = parent.query_one("#children", DataTable)
            assert str(total) in table_column(children, 0)
            ancestors = parent.query_one("#ancestors", DataTable)
            assert table_column(ancestors, 0)[-1].startswith(str(parent_id))

            await pilot.press("escape", "escape")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen)
            await pilot.press("b")  # straight to the best program
            await pilot.pause()
            assert app.screen.program.id == best_id  # type: ignore[attr-defined]
            assert f"score {best_score:.4g}" in text_of(app.screen.query_one("#headline"))

    asyncio.run(drive())


def test_browse_grid_opens_the_elite_of_the_cell(finished_run: Path) -> None:
    db = finished_run / "archive.db"

    async def drive() -> None:
        app = make_app(finished_run)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            await pilot.press("2")
            await pilot.pause()
            grid = app.screen.query_one(GridView)
            island = grid.island
            cell = grid.selected()
            assert cell is not None  # the cursor starts on the island's best cell
            expected = archive_rows(db, f"""SELECT id FROM programs WHERE valid
                AND island={island} AND cell='{cell.cell[0]},{cell.cell[1]}'
                ORDER BY score DESC, id LIMIT 1""")[0][0]
            assert cell.program_id == expected
            shown = str(grid.render())
            assert f"island {island}:" in shown and "·" in shown  # empty cells visible
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen.program.id == expected  # type: ignore[attr-defined]
            await pilot.press("escape", "i")
            await pilot.pause()
            assert grid.island != island  # the next island

    asyncio.run(drive())


def test_browse_filter_and_help(finished_run: Path) -> None:
    async def drive() -> None:
        app = make_app(finished_run)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            await pilot.press("slash", *"island=2 valid=true", "enter")
            await pilot.pause()
            table = app.screen.query_one("#program-rows", DataTable)
            assert table.row_count > 0 and set(table_column(table, 1)) == {"2"}
            assert "—" not in table_column(table, 6)
            await pilot.press("slash", "ctrl+u", *"score>>1", "enter")
            await pilot.pause()
            status = text_of(app.screen.query_one("#status", Static))
            assert "filter not applied" in status
            await pilot.press("escape", "question_mark")  # leave the input, ask for help
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            assert "next / previous island" in text_of(app.screen.query_one("#help", Static))

    asyncio.run(drive())


def test_a_change_seen_while_a_screen_is_pushed_does_not_crash(finished_run: Path) -> None:
    """A poll that found a change just as a screen was pushed (not composed yet) queried
    its widgets and brought the browser down (NoMatches, seen under CI load)."""
    async def drive() -> None:
        app = make_app(finished_run)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            run_id = app.screen.run_id  # type: ignore[attr-defined]
            app.push_screen(RunScreen(app.reader, run_id))
            app._marker = None  # as if the database had changed
            app.poll()  # the new screen is on top, with no widgets yet
            await pilot.pause()
            assert "demo" in text_of(app.screen.query_one("#headline", Static))
            assert app.screen.query_one("ProgramTable").total > 0  # type: ignore

    asyncio.run(drive())


@pytest.mark.slow
def test_browse_refreshes_while_a_run_writes(tmp_path: Path) -> None:
    """A running run is browsed as it goes: new programs appear without a keypress,
    and the browser never blocks the writer (the run ends normally afterwards)."""
    writer = subprocess.Popen(evo_command(*RUN_ARGS, "search.max_evaluations=100000",
                                          "name=live"), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "runs" / "live" / "archive.db"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
                db.exists() and _count(db) >= 5):
            time.sleep(0.5)
        assert db.exists(), "the run never wrote its archive"

        async def drive() -> None:
            app = make_app(db.parent, poll_s=0.5)
            async with app.run_test(size=(160, 50)) as pilot:
                await pilot.pause()
                screen = app.screen
                assert "running" in text_of(screen.query_one("#headline", Static))
                first = screen.query_one("ProgramTable").total  # type: ignore[attr-defined]
                for _ in range(120):
                    await pilot.pause(0.5)
                    if screen.query_one("ProgramTable").total > first:  # type: ignore
                        break
                assert screen.query_one("ProgramTable").total > first  # type: ignore

        asyncio.run(drive())
    finally:
        writer.send_signal(signal.SIGTERM)
        _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr
    assert archive_rows(db, "SELECT status FROM runs")[0][0] == "interrupted"


def _count(db: Path) -> int:
    try:
        return archive_rows(db, "SELECT count(*) FROM programs")[0][0]
    except sqlite3.Error:
        return 0


def test_browse_bad_targets_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.commit()
    cases = {str(tmp_path / "runs" / "missing"): "no such run folder",
             str(tmp_path): "holds no archive.db",
             str(tmp_path / "notes.txt"): "cannot be read as an archive",
             str(empty): "is not an evoengine archive",
             f"sqlite:///{tmp_path}/absent.db": "no such database file"}
    for target, message in cases.items():
        done = subprocess.run(evo_command("browse", target), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (target, done.stderr)
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    # nothing was created or changed by looking
    assert archive_rows(empty, "SELECT name FROM sqlite_master") == [("t",)]
    assert not (tmp_path / "absent.db").exists()


def test_a_candidates_escape_sequences_are_shown_not_sent_to_the_terminal() -> None:
    """Feedback and code pass through Rich's Text untouched: an ESC a candidate printed
    reached the terminal while `evo browse` drew its panes."""
    hostile = "\x1b]0;title\x07\x1b[2J"
    program = ProgramDetail(id=1, island=0, cell=None, generation=1, operator="llm:full",
                            model="m", valid=False, score=None, validation_score=None,
                            error="crash", parent_id=None, code=f"x = '{hostile}'\n",
                            evaluations=[EvaluationRow("train", False, None, "crash", {},
                                                       f"ValueError: {hostile}", 0.1, 0.1, 0)])
    console = Console(force_terminal=True, color_system=None, width=120, record=True)
    console.print(render.feedback_view(program))
    console.print(render.code_view(program.code))
    text = console.export_text()
    assert "\x1b" not in text and "\x07" not in text
    assert text.count("\\x1b]0;title\\x07\\x1b[2J") == 2


# Rich markup, an unbalanced closing tag, a window-title and a clear-screen sequence, and
# a right-to-left override: what a candidate's metrics (OpenEvolve-format problems score
# inside the sandbox), a model name or a hand-edited database can hold
HOSTILE = "[bold]B[/] [/oops] \x1b]0;T\x07\x1b[2J \u202e"


def plant_hostile_text(run_dir: Path, target: Path) -> int:
    """A copy of ``run_dir``'s archive with HOSTILE in every stored text the browser
    shows, a second run beside it, and one row with a cell that is not ``i,j``;
    returns the id of the program that holds it all."""
    shutil.copytree(run_dir, target)
    db = target / "archive.db"
    with sqlite3.connect(db) as conn:
        program_id = conn.execute("SELECT max(id) FROM programs WHERE parent_id IS NOT NULL"
                                  ).fetchone()[0]
        conn.execute("UPDATE runs SET problem = ?", (HOSTILE,))
        conn.execute("""INSERT INTO runs (name, problem, seed, config, status, elapsed_s, cost,
                        created_at, updated_at)
                        SELECT ?, problem, seed, config, status, elapsed_s, cost, created_at,
                        updated_at FROM runs""", (f"other {HOSTILE}",))
        conn.execute("UPDATE programs SET operator = ?, model = ?, error = ?, metrics = ? "
                     "WHERE id = ?", (HOSTILE, HOSTILE, "[/e]\x1b[2J", json.dumps(
                         {HOSTILE: HOSTILE}), program_id))
        conn.execute("UPDATE programs SET cell = 'x,y' WHERE id = 1")
        conn.execute("UPDATE evaluations SET error = ?, metrics = ? WHERE program_id = ?",
                     ("[/e]\x1b[2J", json.dumps({HOSTILE: HOSTILE}), program_id))
    return program_id


def test_stored_text_is_shown_as_written_not_read_as_markup(finished_run: Path,
                                                            tmp_path: Path) -> None:
    """A metric named ``[/oops]`` ended the browser (MarkupError): table cells, headlines
    and the metrics table read stored text as Rich markup, and sent its escape
    sequences to the terminal. Every screen now shows it as written."""
    run_dir = tmp_path / "hostile"
    program_id = plant_hostile_text(finished_run, run_dir)

    async def drive() -> None:
        app = make_app(run_dir)
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause()
            screens = [app.export_screenshot()]  # the runs (two of them)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, RunScreen)
            assert HOSTILE.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace(
                "\u202e", "\\u202e") in text_of(app.screen.query_one("#headline", Static))
            await pilot.press("slash", *"op~[/x]", "enter")  # a filter as typed
            await pilot.pause()
            screens.append(app.export_screenshot())
            await pilot.press("escape", "2")  # the grid leaves the damaged cell out
            await pilot.pause()
            screens.append(app.export_screenshot())
            app.open_program(program_id)
            await pilot.pause()
            for tab in "1234":
                await pilot.press(tab)
                await pilot.pause()
                screens.append(app.export_screenshot())
        assert app.return_code in (None, 0)
        shot = "\n".join(screens)
        assert "\x1b" not in shot and "\u202e" not in shot
        for literal in ("[/oops]", "[bold]B[/]", "[/e]", "op~[/x]", "\\x1b]0;T\\x07"):
            assert literal in html.unescape(shot).replace("\xa0", " "), literal

    asyncio.run(drive())
