"""One program: why it scores what it does next to its parent (diff, metrics, feedback),
its source, its evaluation on each split, and its lineage to follow up and down."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from evoengine.tui import render
from evoengine.tui.queries import ArchiveReader, ProgramDetail, ProgramRow

LINEAGE_COLUMNS = ("id", "gen", "island", "operator", "model", "score", "change", "error")


def program_headline(program: ProgramDetail) -> Text:
    text = Text(f"program #{program.id}", style="bold")
    state = (Text("valid", style="green") if program.valid
             else render.literal(f"invalid: {program.error}", style="red"))
    text.append("  ·  ").append_text(state)
    text.append_text(render.literal(
        f"  ·  score {render.format_score(program.score)}"
        f"  ·  validation {render.format_score(program.validation_score)}"
        f"  ·  island {program.island}  ·  cell {program.cell or '—'}"
        f"  ·  generation {program.generation}  ·  {program.operator} by "
        f"{program.model}  ·  parent "
        + (f"#{program.parent_id}" if program.parent_id else "none")
        + (f" + #{program.second_parent_id}" if program.second_parent_id else "")))
    return text


def evaluations_table(program: ProgramDetail) -> Table:
    table = Table(title="evaluations (one per split)", expand=True)
    for column in ("split", "valid", "score", "error", "wall s", "cpu s", "stage", "metrics"):
        table.add_column(column)
    for e in program.evaluations:
        table.add_row(render.literal(e.split), "yes" if e.valid else "no",
                      render.format_score(e.score), render.literal(e.error or ""),
                      f"{e.wall_s:.2f}", f"{e.cpu_s:.2f}", str(e.stage),
                      render.literal(", ".join(
                          f"{k}={render.format_score(v) if isinstance(v, float) else v}"
                          for k, v in e.metrics.items())))
    return table


class ProgramScreen(Screen[None]):
    BINDINGS = [
        Binding("p", "parent", "parent"),
        Binding("P", "second_parent", "2nd parent", show=False),
        Binding("c", "child", "first child"),
        Binding("1", "tab('why')", "why"),
        Binding("2", "tab('source')", "source"),
        Binding("3", "tab('evaluations')", "evaluations"),
        Binding("4", "tab('lineage')", "lineage"),
        Binding("escape", "app.pop_screen", "back"),
    ]
    DEFAULT_CSS = """
    ProgramScreen #headline { height: auto; padding: 0 1; background: $boost; }
    ProgramScreen #tabs { height: 1fr; }
    ProgramScreen #why-diff { width: 3fr; }
    ProgramScreen #why-side { width: 2fr; }
    ProgramScreen .lineage-title { padding: 1 1 0 1; text-style: bold; }
    ProgramScreen DataTable { height: auto; max-height: 20; }
    """

    def __init__(self, reader: ArchiveReader, program: ProgramDetail) -> None:
        super().__init__()
        self.reader = reader
        self.program = program
        self.parent_program = reader.program(program.parent_id) if program.parent_id else None
        self.ancestor_rows: list[ProgramRow] = []
        self.child_rows: list[ProgramRow] = []

    def compose(self) -> ComposeResult:
        program = self.program
        yield Static(program_headline(program), id="headline")
        with TabbedContent(id="tabs", initial="why"):
            with TabPane("Why [1]", id="why"), Horizontal():
                with VerticalScroll(id="why-diff"):
                    yield Static(render.diff_view(program, self.parent_program), id="diff")
                with VerticalScroll(id="why-side"):
                    yield Static(render.metrics_table(program, self.parent_program), id="metrics")
                    yield Static(render.feedback_view(program), id="feedback")
            with TabPane("Source [2]", id="source"), VerticalScroll():
                yield Static(render.code_view(program.code), id="code")
            with TabPane("Evaluations [3]", id="evaluations"), VerticalScroll():
                yield Static(evaluations_table(program), id="evaluation-table")
            with TabPane("Lineage [4]", id="lineage"), VerticalScroll():
                yield Static("ancestors (oldest first; change: against the one above; "
                             "Enter opens)", classes="lineage-title")
                yield DataTable(id="ancestors", cursor_type="row")
                yield Static("children (change: against this program; Enter opens)",
                             classes="lineage-title")
                yield DataTable(id="children", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.ancestor_rows = self.reader.ancestors(self.program.id)
        self.child_rows = self.reader.children(self.program.id)
        self._fill("#ancestors", self.ancestor_rows)
        self._fill("#children", self.child_rows)

    def _fill(self, selector: str, rows: list[ProgramRow]) -> None:
        table = self.query_one(selector, DataTable)
        if not table.columns:
            table.add_columns(*LINEAGE_COLUMNS)
        table.clear()
        previous: float | None = None
        for row in rows:
            reference = previous if selector == "#ancestors" else self.program.score
            change = ("" if row.score is None or reference is None
                      else f"{row.score - reference:+.4g}")
            marker = " ◀" if row.id == self.program.id else ""
            table.add_row(f"{row.id}{marker}", str(row.generation), str(row.island),
                          render.literal(row.operator), render.literal(row.model),
                          render.format_score(row.score), change,
                          render.literal(row.error or ""), key=str(row.id))
            previous = row.score if row.score is not None else previous

    # --- actions ------------------------------------------------------------------------
    def _open(self, program_id: int | None, what: str) -> None:
        if program_id is None:
            self.notify(f"program #{self.program.id} has no {what}")
        else:
            self.app.open_program(program_id)  # type: ignore[attr-defined]

    def action_parent(self) -> None:
        self._open(self.program.parent_id, "parent (it is a seed)")

    def action_second_parent(self) -> None:
        self._open(self.program.second_parent_id, "second parent")

    def action_child(self) -> None:
        self._open(self.child_rows[0].id if self.child_rows else None, "children")

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "lineage":
            self.query_one("#ancestors", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        program_id = int(event.row_key.value or 0)
        if program_id != self.program.id:
            self.app.open_program(program_id)  # type: ignore[attr-defined]
