"""Pure rendering of archive data as Rich renderables: the MAP-Elites heatmap, the
best-score chart, the diff against a parent and the metric comparison.

Kept apart from the Textual widgets so each can be read (and checked) on its own; the
heatmap and chart are drawn with text cells, which keeps the browser's dependencies to
Textual alone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.style import Style
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from evoengine.terminal import shown
from evoengine.tui.queries import Elite, ProgramDetail

#: heatmap colour ramp, worst to best (a perceptually ordered blue -> green -> yellow)
_RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
_CELL_WIDTH = 7
_BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass
class GridAxes:
    """The grid's first two feature axes (a one-axis grid gets a single row)."""

    names: list[str]
    bins: list[int]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GridAxes:
        """The axes of a run as its stored config defines them (as the engine does)."""
        search = config.get("search", {}) or {}
        dims = search.get("features") or [search.get("code_length") or {},
                                          *((config.get("problem") or {}).get("features")
                                            or [])]
        dims = [d for d in dims if d]
        if not dims:
            return cls(names=["cell"], bins=[1])
        return cls(names=[str(d.get("name", "?")) for d in dims],
                   bins=[int(d.get("bins", 1)) for d in dims])

    @property
    def columns(self) -> int:
        return self.bins[0]

    @property
    def rows(self) -> int:
        return self.bins[1] if len(self.bins) > 1 else 1


def project(elites: Sequence[Elite], axes: GridAxes) -> dict[tuple[int, int], Elite]:
    """Elites by (column, row) of the first two axes; the best wins where a grid has
    more axes than two (the others are collapsed)."""
    shown: dict[tuple[int, int], Elite] = {}
    for elite in elites:
        cell = elite.cell
        key = (cell[0] if cell else 0, cell[1] if len(cell) > 1 else 0)
        current = shown.get(key)
        if current is None or (elite.score, -elite.program_id) > (current.score,
                                                                   -current.program_id):
            shown[key] = elite
    return shown


def _colour(fraction: float) -> tuple[int, int, int]:
    position = max(0.0, min(1.0, fraction)) * (len(_RAMP) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(_RAMP) - 1)
    t = position - low
    (r0, g0, b0), (r1, g1, b1) = _RAMP[low], _RAMP[high]
    return round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t)


def literal(value: object, style: str = "") -> Text:
    """``value`` as stored (a name, an error, a metric; a candidate or a model may have
    written it) shown as it is: no Rich markup read in it, control characters as visible
    escapes. Textual reads a plain ``str`` cell as markup, and ``[/x]`` ended the app."""
    return Text(shown(str(value)), style=style)


def format_score(score: float | None, width: int = 0) -> str:
    text = "—" if score is None else f"{score:.4g}"
    return text.rjust(width) if width else text


def heatmap(cells: dict[tuple[int, int], Elite], axes: GridAxes,
            cursor: tuple[int, int] | None) -> Text:
    """The grid as coloured text cells, highest row first; empty cells show a dot.

    Colour follows the rank of a cell's score among the island's elites, so one very
    bad outlier does not paint every other cell the same colour.
    """
    scores = sorted(e.score for e in cells.values() if math.isfinite(e.score))
    low, high = (scores[0], scores[-1]) if scores else (0.0, 1.0)
    rank = {score: i / max(1, len(scores) - 1) for i, score in enumerate(scores)}
    text = Text()
    y_name = axes.names[1] if len(axes.names) > 1 else ""
    for row in reversed(range(axes.rows)):
        text.append(f"{row:>3} ", style="dim")
        for column in range(axes.columns):
            elite = cells.get((column, row))
            selected = cursor == (column, row)
            if elite is None:
                label, style = "·".center(_CELL_WIDTH), Style(dim=True)
            else:
                r, g, b = _colour(rank.get(elite.score, 0.0) if len(scores) > 1 else 1.0)
                dark = (0.299 * r + 0.587 * g + 0.114 * b) < 140
                label = format_score(elite.score).center(_CELL_WIDTH)[:_CELL_WIDTH]
                style = Style(bgcolor=f"rgb({r},{g},{b})",
                              color="white" if dark else "black")
            if selected:
                label = f"[{label[1:-1]}]"
                style = style + Style(bold=True, reverse=elite is None, underline=True)
            text.append(label, style=style)
        text.append("\n")
    text.append("    " + "".join(str(c).center(_CELL_WIDTH) for c in range(axes.columns)),
                style="dim")
    text.append(f"\n    columns: {axes.names[0]}" + (f"   rows: {y_name}" if y_name else ""),
                style="dim")
    if len(axes.names) > 2:
        text.append(f"   (best over {', '.join(axes.names[2:])})", style="dim")
    if scores:
        text.append(f"\n    colour by rank: worst {format_score(low)} ", style="dim")
        for step in range(10):
            r, g, b = _colour(step / 9)
            text.append("  ", style=Style(bgcolor=f"rgb({r},{g},{b})"))
        text.append(f" best {format_score(high)}", style="dim")
    return text


def chart(values: Sequence[float | None], total: int, height: int = 12,
          title: str = "best score over evaluations") -> Text:
    """A bar chart of ``values`` drawn with eighth-block characters, with its range."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    text = Text(f"{title}\n", style="bold")
    if not known:
        text.append("no valid program yet", style="dim")
        return text
    low, high = min(known), max(known)
    span = high - low
    levels = [None if v is None or not math.isfinite(v)
              else (height * 8 if span == 0 else round(1 + (v - low) / span * (height * 8 - 1)))
              for v in values]
    for row in reversed(range(height)):
        label = format_score(high) if row == height - 1 else (
            format_score(low) if row == 0 else "")
        text.append(f"{label:>10} │", style="dim")
        line = []
        for level in levels:
            if level is None:
                line.append(" ")
            else:
                line.append(_BLOCKS[max(0, min(8, level - row * 8))])
        text.append("".join(line), style="green")
        text.append("\n")
    text.append(" " * 11 + "└" + "─" * len(values) + "\n", style="dim")
    text.append(" " * 12 + "0".ljust(max(1, len(values) - len(str(total)))) + str(total),
                style="dim")
    text.append("   evaluations", style="dim")
    return text


def code_view(code: str) -> Syntax:
    return Syntax(shown(code), "python", line_numbers=True, word_wrap=False, theme="monokai")


def diff_view(program: ProgramDetail, parent: ProgramDetail | None) -> RenderableType:
    """The unified diff from the parent's code to this program's code."""
    if parent is None:
        return Text("no parent: this is a seed program", style="dim")
    lines = list(difflib.unified_diff(parent.code.splitlines(), program.code.splitlines(),
                                      f"#{parent.id} (parent)", f"#{program.id}",
                                      n=3, lineterm=""))
    if not lines:
        return Text(f"same code as parent #{parent.id} (a copy)", style="dim")
    return Syntax(shown("\n".join(lines)), "diff", theme="monokai", word_wrap=True)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def metrics_table(program: ProgramDetail, parent: ProgramDetail | None) -> Table:
    """This program's score and metrics beside its parent's, with the change."""
    table = Table(title="metrics vs parent", expand=True, show_edge=False)
    table.add_column("metric")
    table.add_column(f"#{program.id}", justify="right")
    table.add_column(f"parent #{parent.id}" if parent else "parent", justify="right")
    table.add_column("change", justify="right")
    rows: list[tuple[str, Any, Any]] = [
        ("score", program.score, parent.score if parent else None),
        ("validation", program.validation_score, parent.validation_score if parent else None)]
    names = list(dict.fromkeys([*program.metrics, *(parent.metrics if parent else {})]))
    rows += [(name, program.metrics.get(name), parent.metrics.get(name) if parent else None)
             for name in names]
    for name, mine, theirs in rows:
        a, b = _number(mine), _number(theirs)
        change = Text("")
        if a is not None and b is not None:
            delta = a - b
            change = Text(f"{delta:+.4g}", style="green" if delta > 0 else
                          ("red" if delta < 0 else "dim"))
        table.add_row(literal(name), "—" if mine is None else (format_score(a) if a is not None
                                                                 else literal(mine)),
                      "—" if theirs is None else (format_score(b) if b is not None
                                                  else literal(theirs)), change)
    return table


def feedback_view(program: ProgramDetail) -> RenderableType:
    """The evaluator's feedback and error, per split, as the next prompt would see it."""
    parts: list[RenderableType] = []
    if program.error:
        parts.append(literal(f"error: {program.error}", style="bold red"))
    for evaluation in program.evaluations:
        header = Text(f"{evaluation.split}: ", style="bold")
        header.append("valid" if evaluation.valid else f"invalid ({shown(str(evaluation.error))})",
                      style="green" if evaluation.valid else "red")
        header.append(f"  score {format_score(evaluation.score)}  "
                      f"{evaluation.wall_s:.2f} s wall, {evaluation.cpu_s:.2f} s CPU, "
                      f"stage {evaluation.stage}", style="dim")
        parts.append(header)
        if evaluation.feedback:
            parts.append(literal(evaluation.feedback))  # the candidate wrote it
    if not program.evaluations:
        parts.append(Text("not evaluated (a stored copy of another program)", style="dim"))
        if program.feedback:
            parts.append(literal(program.feedback))
    return Group(*parts)
