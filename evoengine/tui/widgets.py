"""Textual widgets of the browser: the MAP-Elites grid with a cursor, the best-score
chart and the paged program table. They show what the screens hand them; every read
goes through ``ArchiveReader`` (a page, an island, a curve at a time)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from evoengine.tui import render
from evoengine.tui.filters import FilterError
from evoengine.tui.queries import SORT_COLUMNS, ArchiveReader, Elite, ProgramRow

PAGE_SIZE = 100


def program_cells(row: ProgramRow) -> tuple[str | Text, ...]:
    """A program as the table shows it (stored text as it is: ``render.literal``)."""
    return (str(row.id), str(row.island), render.literal(row.cell or "—"),
            str(row.generation), render.literal(row.operator), render.literal(row.model),
            render.format_score(row.score), render.format_score(row.validation_score),
            render.literal(row.error or ""))


PROGRAM_COLUMNS = ("id", "island", "cell", "gen", "operator", "model", "score", "validation",
                   "error")
#: table column label -> sort key of ``ArchiveReader.programs_page``
_SORT_OF_COLUMN = {"id": "id", "island": "island", "cell": "cell", "gen": "generation",
                   "operator": "operator", "model": "model", "score": "score",
                   "validation": "validation", "error": "error"}


class GridView(Widget, can_focus=True):
    """One island's grid as a heatmap; arrows move the cursor, Enter opens the elite."""

    BINDINGS = [
        Binding("up", "move(0, 1)", "up", show=False),
        Binding("down", "move(0, -1)", "down", show=False),
        Binding("left", "move(-1, 0)", "left", show=False),
        Binding("right", "move(1, 0)", "right", show=False),
        Binding("enter", "open", "open elite"),
    ]
    DEFAULT_CSS = "GridView { height: auto; padding: 0 1; }"
    cursor: reactive[tuple[int, int]] = reactive((0, 0))

    class EliteChosen(Message):
        def __init__(self, program_id: int) -> None:
            super().__init__()
            self.program_id = program_id

    def __init__(self, axes: render.GridAxes, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.axes = axes
        self.island = 0
        self.cells: dict[tuple[int, int], Elite] = {}

    def show(self, island: int, elites: list[Elite]) -> None:
        first = self.island != island or not self.cells
        self.island = island
        self.cells = render.project(elites, self.axes)
        if first and self.cells:  # start on the island's best cell
            self.cursor = max(self.cells, key=lambda k: self.cells[k].score)
        self.refresh(layout=True)

    def selected(self) -> Elite | None:
        return self.cells.get(self.cursor)

    def action_move(self, dx: int, dy: int) -> None:
        x, y = self.cursor
        self.cursor = (min(self.axes.columns - 1, max(0, x + dx)),
                       min(self.axes.rows - 1, max(0, y + dy)))

    def action_open(self) -> None:
        elite = self.selected()
        if elite is not None:
            self.post_message(self.EliteChosen(elite.program_id))

    def render(self) -> Text:
        text = Text(f"island {self.island}: {len(self.cells)} of "
                    f"{self.axes.columns * self.axes.rows} cells filled\n", style="bold")
        text.append_text(render.heatmap(self.cells, self.axes, self.cursor))
        elite = self.selected()
        x, y = self.cursor
        text.append(f"\ncell ({x},{y}): ", style="bold")
        text.append(f"program #{elite.program_id}  score {render.format_score(elite.score)}"
                    "  (Enter opens it)" if elite else "empty")
        return text


class ProgramTable(Vertical):
    """The run's programs, one page at a time, sorted and filtered in SQL."""

    DEFAULT_CSS = """
    ProgramTable { height: 1fr; }
    ProgramTable DataTable { height: 1fr; }
    ProgramTable #status { height: 1; color: $text-muted; }
    """

    def __init__(self, reader: ArchiveReader, run_id: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.reader = reader
        self.run_id = run_id
        self.sort, self.descending, self.page, self.filter_text = "score", True, 0, ""
        self.total = 0

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: score>-4.5 island=1 op~grow error=none val!=none "
                                "(Enter applies)", id="filter")
        table: DataTable[str] = DataTable(id="program-rows", cursor_type="row", zebra_stripes=True)
        table.add_columns(*PROGRAM_COLUMNS)
        yield table
        yield Static(id="status")

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#program-rows", DataTable)

    def reload(self, keep_cursor: bool = True) -> None:
        table = self.table
        cursor = table.cursor_row if keep_cursor else 0
        try:
            self.total = self.reader.count_programs(self.run_id, self.filter_text)
            self.page = min(self.page, max(0, (self.total - 1) // PAGE_SIZE))
            rows = self.reader.programs_page(
                self.run_id, filter_text=self.filter_text, sort=self.sort,
                descending=self.descending, limit=PAGE_SIZE, offset=self.page * PAGE_SIZE)
        except FilterError as exc:
            self.query_one("#status", Static).update(
                render.literal(f"filter not applied: {exc}", style="red"))
            return
        table.clear()
        for row in rows:
            table.add_row(*program_cells(row), key=str(row.id))
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
        first = self.page * PAGE_SIZE
        arrow = "↓" if self.descending else "↑"
        self.query_one("#status", Static).update(render.literal(  # the filter as typed
            f"rows {first + 1 if rows else 0}–{first + len(rows)} of {self.total:,}"
            f"  ·  sort {self.sort} {arrow}  ·  filter: {self.filter_text or 'none'}"
            f"  ·  [ ] page  s sort  o order  / filter"))

    def set_filter(self, text: str) -> None:
        self.filter_text, self.page = text.strip(), 0
        self.reload(keep_cursor=False)

    def sort_by(self, key: str) -> None:
        if key == self.sort:
            self.descending = not self.descending
        else:
            self.sort, self.descending = key, key in ("score", "validation", "id")
        self.page = 0
        self.reload(keep_cursor=False)

    def cycle_sort(self) -> None:
        keys = list(SORT_COLUMNS)
        self.sort_by(keys[(keys.index(self.sort) + 1) % len(keys)])

    def flip_order(self) -> None:
        self.sort_by(self.sort)

    def turn_page(self, delta: int) -> None:
        last = max(0, (self.total - 1) // PAGE_SIZE)
        page = min(last, max(0, self.page + delta))
        if page != self.page:
            self.page = page
            self.reload(keep_cursor=False)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(_SORT_OF_COLUMN[str(event.label)])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter(event.value)
        self.table.focus()
