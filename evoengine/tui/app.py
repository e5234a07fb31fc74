"""``evo browse``: the Textual app that opens an archive and keeps it current.

The app holds one ``ArchiveReader`` and a stack of screens (runs → run → program → ...).
Every ~2 s it asks the database whether anything was written (max ids, run status) and,
if so, lets the screen on top re-read what it shows; a run writing to the same SQLite
file is never blocked (WAL readers take no write lock).
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches

from evoengine.errors import first_line
from evoengine.terminal import shown
from evoengine.tui.queries import ArchiveReader
from evoengine.tui.screens.help import HelpScreen
from evoengine.tui.screens.program import ProgramScreen
from evoengine.tui.screens.run import RunScreen
from evoengine.tui.screens.runs import RunsScreen


class BrowseApp(App[None]):
    TITLE = "evo browse"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, reader: ArchiveReader, run_name: str | None = None,
                 poll_s: float = 2.0) -> None:
        super().__init__()
        self.reader = reader
        self.run_name = run_name
        self.poll_s = poll_s
        self._marker: object = None

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.reader))
        runs = self.reader.runs()
        chosen = [r for r in runs if r.name == self.run_name] if self.run_name else runs
        if len(chosen) == 1:  # one run (or the one asked for): straight to it
            self.open_run(chosen[0].id)
        elif self.run_name:
            self.notify(shown(f"no run named {self.run_name!r}; pick one"),
                        severity="warning", markup=False)
        self._marker = self.reader.change_marker()
        if self.poll_s > 0:
            self.set_interval(self.poll_s, self.poll)

    def poll(self) -> None:
        """Re-read the screen on top when the database changed since the last look."""
        try:
            marker = self.reader.change_marker()
            if marker != self._marker:
                self._marker = marker
                refresh = getattr(self.screen, "refresh_data", None)
                if refresh is not None:
                    refresh()
        except NoMatches:  # a screen pushed or popped this instant: not composed (yet)
            pass  # (a screen reads the database when it mounts)
        except SQLAlchemyError as exc:  # e.g. the file is being replaced: try again later
            self.notify(shown(f"could not read the archive: {first_line(exc)}"),
                        severity="warning", markup=False)

    def open_run(self, run_id: int) -> None:
        self.push_screen(RunScreen(self.reader, run_id))

    def open_program(self, program_id: int) -> None:
        program = self.reader.program(program_id)
        if program is None:
            self.notify(f"no program #{program_id}", severity="error")
        else:
            self.push_screen(ProgramScreen(self.reader, program))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_pop_screen(self) -> None:
        if len(self.screen_stack) > 2:  # never pop the default screen or the runs list
            self.pop_screen()
