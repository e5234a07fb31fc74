"""The key-binding help (``?``), in one place so the README and the screens agree."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (where, keys, what they do), shown by the help screen
KEYS: list[tuple[str, str, str]] = [
    ("anywhere", "?", "this help"),
    ("anywhere", "q", "quit"),
    ("anywhere", "escape", "back to the previous screen"),
    ("runs", "enter", "open the run under the cursor"),
    ("run", "1 / 2 / 3", "programs / MAP-Elites grid / best-score chart"),
    ("run", "b", "open the best program"),
    ("programs", "enter", "open the program under the cursor"),
    ("programs", "/", "edit the filter (e.g. score>-4.5 island=1 op~grow error=none)"),
    ("programs", "s / o", "next sort column / flip the order (or click a header)"),
    ("programs", "[ / ]", "previous / next page"),
    ("grid", "arrows", "move the cursor between cells"),
    ("grid", "enter", "open the cell's elite"),
    ("grid", "i / I", "next / previous island"),
    ("program", "p / P", "open the parent / the second parent (crossover)"),
    ("program", "c", "open the first child (the lineage tab lists all)"),
    ("program", "1 / 2 / 3 / 4", "why (diff, metrics, feedback) / source / evaluations / "
                                 "lineage"),
    ("lineage", "enter", "open the ancestor or child under the cursor"),
]


class HelpScreen(ModalScreen[None]):
    """Every key binding, by screen."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        table = Table(title="evo browse: keys", expand=True, show_edge=False)
        table.add_column("where", style="cyan")
        table.add_column("key", style="bold")
        table.add_column("does")
        for where, keys, does in KEYS:
            table.add_row(where, keys, does)
        with VerticalScroll():
            yield Static(table, id="help")
            yield Static("Data refreshes every 2 s while a run writes. Escape closes this.")
