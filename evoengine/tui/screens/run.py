"""One run: its program table, its MAP-Elites grids (one per island) and its chart."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from evoengine.tui.queries import ArchiveReader, RunSummary
from evoengine.tui.render import GridAxes, chart, format_score, literal
from evoengine.tui.widgets import GridView, ProgramTable

CHART_WIDTH = 100


def run_headline(run: RunSummary) -> Text:
    text = literal(f"run {run.name}", style="bold")
    text.append_text(literal(
        f"  ·  {run.problem}  ·  {run.status}  ·  {run.evaluations:,} evaluations"
        f"  ·  {run.programs:,} programs  ·  best {format_score(run.best_score)}"
        f"  ·  ${run.cost:.4f}  ·  {run.elapsed_s:.0f} s"))
    return text


class RunScreen(Screen[None]):
    BINDINGS = [
        Binding("1", "tab('programs')", "programs"),
        Binding("2", "tab('grid')", "grid"),
        Binding("3", "tab('chart')", "chart"),
        Binding("b", "open_best", "best program"),
        Binding("slash", "edit_filter", "filter"),
        Binding("s", "cycle_sort", "sort"),
        Binding("o", "flip_order", "order"),
        Binding("left_square_bracket", "page(-1)", "prev page"),
        Binding("right_square_bracket", "page(1)", "next page"),
        Binding("i", "island(1)", "next island"),
        Binding("I", "island(-1)", "prev island", show=False),
        Binding("escape", "app.pop_screen", "back"),
    ]
    DEFAULT_CSS = """
    RunScreen #headline { height: auto; padding: 0 1; background: $boost; }
    RunScreen #tabs { height: 1fr; }
    """

    def __init__(self, reader: ArchiveReader, run_id: int) -> None:
        super().__init__()
        self.reader = reader
        self.run_id = run_id
        self.summary = reader.run(run_id)
        self.island_list = reader.islands(run_id) or [0]
        self.island_index = 0

    def compose(self) -> ComposeResult:
        yield Static(run_headline(self.summary), id="headline")
        with TabbedContent(id="tabs", initial="programs"):
            with TabPane("Programs [1]", id="programs"):
                yield ProgramTable(self.reader, self.run_id, id="program-table")
            with TabPane("Grid [2]", id="grid"), VerticalScroll():
                yield GridView(GridAxes.from_config(self.summary.config), id="grid-view")
            with TabPane("Chart [3]", id="chart"), VerticalScroll():
                yield Static(id="chart-view")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_data()
        self.query_one(ProgramTable).table.focus()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        """Re-read what is on screen (called on a change, every ~2 s while a run writes)."""
        self.summary = self.reader.run(self.run_id)
        self.island_list = self.reader.islands(self.run_id) or [0]
        self.query_one("#headline", Static).update(run_headline(self.summary))
        self._refresh_tab(self.query_one(TabbedContent).active or "programs")

    def _refresh_tab(self, tab: str) -> None:
        """Read only what the visible tab shows (the others are read when opened)."""
        if tab == "programs":
            self.query_one(ProgramTable).reload()
        elif tab == "grid":
            self._show_grid()
        elif tab == "chart":
            total, curve = self.reader.best_curve(self.run_id, CHART_WIDTH)
            self.query_one("#chart-view", Static).update(chart(curve, total))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.tabbed_content.id == "tabs":
            self._refresh_tab(event.pane.id or "programs")

    def _show_grid(self) -> None:
        island = self.island_list[self.island_index % len(self.island_list)]
        self.query_one(GridView).show(island, self.reader.elites(self.run_id, island))

    # --- actions ------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        target = {"programs": self.query_one(ProgramTable).table,
                  "grid": self.query_one(GridView)}.get(tab)
        if target is not None:
            target.focus()

    def action_open_best(self) -> None:
        best = self.reader.best_program_id(self.run_id)
        if best is None:
            self.notify("no valid program yet")
        else:
            self.app.open_program(best)  # type: ignore[attr-defined]

    def action_edit_filter(self) -> None:
        self.action_tab("programs")
        self.query_one("#filter", Input).focus()

    def action_cycle_sort(self) -> None:
        self.query_one(ProgramTable).cycle_sort()

    def action_flip_order(self) -> None:
        self.query_one(ProgramTable).flip_order()

    def action_page(self, delta: int) -> None:
        self.query_one(ProgramTable).turn_page(delta)

    def action_island(self, delta: int) -> None:
        self.island_index = (self.island_index + delta) % len(self.island_list)
        self._show_grid()

    # --- events ---------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.app.open_program(int(event.row_key.value or 0))  # type: ignore[attr-defined]

    def on_grid_view_elite_chosen(self, event: GridView.EliteChosen) -> None:
        event.stop()
        self.app.open_program(event.program_id)  # type: ignore[attr-defined]
