"""The runs overview: every run in the database with its progress and best score."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from evoengine.tui.queries import ArchiveReader
from evoengine.tui.render import format_score, literal

RUN_COLUMNS = ("name", "problem", "status", "evaluations", "programs", "best score", "cost",
               "elapsed")


class RunsScreen(Screen[None]):
    def __init__(self, reader: ArchiveReader) -> None:
        super().__init__()
        self.reader = reader

    def compose(self) -> ComposeResult:
        yield Static("runs in this archive (Enter opens one, ? for keys)", id="title")
        table: DataTable[str] = DataTable(id="runs", cursor_type="row")
        table.add_columns(*RUN_COLUMNS)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        table = self.query_one("#runs", DataTable)
        cursor = table.cursor_row
        table.clear()
        for run in self.reader.runs():
            table.add_row(literal(run.name), literal(run.problem), literal(run.status),
                          f"{run.evaluations:,}",
                          f"{run.programs:,}", format_score(run.best_score),
                          f"${run.cost:.4f}", f"{run.elapsed_s:.0f} s", key=str(run.id))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.app.open_run(int(event.row_key.value or 0))  # type: ignore[attr-defined]
