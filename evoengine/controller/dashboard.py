"""Showing a run while it goes: a ``rich`` live dashboard, or plain progress lines.

``auto`` picks the live dashboard on a terminal and plain lines otherwise (CI, pipes).
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from evoengine.controller.stats import RunStats
from evoengine.llm.ensemble import describe_arms
from evoengine.terminal import markup_free, shown


def render(stats: RunStats) -> Panel:
    """One frame of the dashboard.

    Rich's refresh thread calls this while the controller updates ``stats``, so the
    counters are copied (a C-level, GIL-held copy) before they are iterated.
    """
    done = min(stats.evaluations, stats.max_evaluations)
    header = Table.grid(padding=(0, 2))
    header.add_row(f"[bold]{markup_free(stats.run_name)}[/]",  # names as given: no markup,
                   f"problem [cyan]{markup_free(stats.problem)}[/]",  # no control codes
                   f"mutator {markup_free(stats.mutator)}",
                   f"sandbox {markup_free(stats.sandbox)}")
    progress = Table.grid(padding=(0, 2))
    progress.add_row(ProgressBar(total=stats.max_evaluations, completed=done, width=40),
                     f"{done}/{stats.max_evaluations} evaluations",
                     f"{stats.evaluations_per_second:.2f} eval/s",
                     f"{stats.session_seconds:.0f} s")
    best = "—" if stats.best_score is None else f"{stats.best_score:.4f}"
    failures = ", ".join(f"{kind} {n}" for kind, n in sorted(dict(stats.failures).items()))
    skipped = ", ".join(f"{kind} {n}" for kind, n in sorted(dict(stats.outcomes).items()))
    summary = Table.grid(padding=(0, 2))
    summary.add_row(f"best score [bold green]{best}[/] (program {stats.best_program_id})",
                    f"failures: {failures or 'none'}", f"not evaluated: {skipped or 'none'}",
                    f"cost ${stats.cost:.4f}",
                    f"tokens {stats.prompt_tokens:,} in / {stats.completion_tokens:,} out")
    top = Table(title="top programs", expand=False, show_edge=False)
    for column in ("id", "score", "island", "operator"):
        top.add_column(column)
    for program_id, score, island, operator in list(stats.top):
        top.add_row(str(program_id), f"{score:.4f}", str(island), markup_free(operator))
    parts = [header, progress, summary, top]
    models = list(stats.models)
    if models:
        parts.append(markup_free(f"models: {describe_arms(models)}"))
    if stats.message:
        parts.append(markup_free(stats.message))
    parts.extend(markup_free(shown(f"note: {notice}")) for notice in stats.notices)
    return Panel(Group(*parts), title="evoengine", border_style="blue")


class Dashboard:
    """A context manager that shows ``stats`` until the run ends."""

    def __init__(self, stats: RunStats, mode: str, console: Console | None = None) -> None:
        self.stats = stats
        self.console = console or Console(stderr=False)
        if mode == "auto":
            mode = "rich" if self.console.is_terminal else "plain"
        self.mode = mode
        self._live: Live | None = None
        self._last_line = 0.0
        self._notices_shown = 0

    def __enter__(self) -> Dashboard:
        if self.mode == "rich":
            self._live = Live(get_renderable=lambda: render(self.stats), console=self.console,
                              refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def tick(self) -> None:
        """Called after each step; the plain mode prints a line every few seconds, and
        each new notice at once."""
        if self.mode != "plain":
            return
        self._print_notices()
        if time.monotonic() - self._last_line >= 5.0:
            self._print_line()

    def _print_notices(self) -> None:
        for notice in self.stats.notices[self._notices_shown:]:
            print(shown(f"note: {notice}"), file=sys.stdout, flush=True)
        self._notices_shown = len(self.stats.notices)

    def _print_line(self) -> None:
        self._last_line = time.monotonic()
        best = "—" if self.stats.best_score is None else f"{self.stats.best_score:.4f}"
        skipped = ""
        if self.stats.outcomes:  # steps with no child to evaluate: a model down, say
            kind, count = self.stats.outcomes.most_common(1)[0]
            skipped = (f" | not evaluated {sum(self.stats.outcomes.values())} "
                       f"(most: {kind} {count})")
        print(f"[{self.stats.evaluations}/{self.stats.max_evaluations}] best {best} "
              f"| {self.stats.evaluations_per_second:.2f} eval/s "
              f"| failures {sum(self.stats.failures.values())}{skipped} "
              f"| cost ${self.stats.cost:.4f}", file=sys.stdout, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
        elif self.mode == "plain":
            self._print_notices()
            self._print_line()  # the final counts: the last line may be seconds old
            if self.stats.models:  # the final state of the bandit
                print(shown(f"models: {describe_arms(list(self.stats.models))}"),
                      file=sys.stdout, flush=True)
