"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes.

Each function returns ``None`` when there is nothing to draw (e.g. no valid program
yet), and the page says so in place of the figure.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from evoengine.report.data import ReportData, SuccessRate  # noqa: E402
from evoengine.tui.render import project  # noqa: E402

_CHECKPOINTS = 200  # points per median curve: an expanding median at each


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def score_curves(data: ReportData) -> bytes | None:
    """Best-so-far (solid) and median-so-far of valid scores (dashed), per island,
    against the run's evaluation count."""
    per_island: dict[int, tuple[list[int], list[float]]] = {}
    for number, (island, score) in enumerate(data.evaluations, start=1):
        if score is not None and math.isfinite(score):
            xs, ys = per_island.setdefault(island, ([], []))
            xs.append(number)
            ys.append(score)
    if not per_island:
        return None
    figure, axes = plt.subplots(figsize=(9, 4.5))
    colours = plt.get_cmap("tab10")
    for index, (island, (xs, ys)) in enumerate(sorted(per_island.items())):
        colour = colours(index % 10)
        scores = np.asarray(ys)
        axes.step(xs, np.maximum.accumulate(scores), where="post", color=colour,
                  label=f"island {island} best")
        picks = np.unique(np.linspace(1, len(scores), min(_CHECKPOINTS, len(scores)),
                                      dtype=int))
        axes.plot([xs[p - 1] for p in picks], [float(np.median(scores[:p])) for p in picks],
                  linestyle="--", color=colour, alpha=0.7, label=f"island {island} median")
    all_scores = np.concatenate([np.asarray(ys) for _, ys in per_island.values()])
    lowest_best = min(float(np.asarray(ys)[0]) for _, ys in per_island.values())
    low = min(lowest_best, float(np.percentile(all_scores, 25)))
    top = float(all_scores.max())
    if top > low:  # keep far-off failures from flattening the interesting part
        axes.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low))
    axes.set_xlabel("evaluations")
    axes.set_ylabel("score (higher is better)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="lower right")
    return to_png(figure)


def heatmaps(data: ReportData) -> bytes | None:
    """Each island's grid: elite score per cell on the first two feature axes."""
    if not any(data.elites.values()):
        return None
    islands = sorted(data.elites)
    columns = min(4, len(islands))
    rows = math.ceil(len(islands) / columns)
    figure, grid_axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows),
                                     squeeze=False)
    scores = [e.score for elites in data.elites.values() for e in elites
              if math.isfinite(e.score)]
    vmin, vmax = float(np.percentile(scores, 25)), max(scores)  # outliers: "extend"
    if vmin == vmax:
        vmin -= 1e-9
    image = None
    for index, island in enumerate(islands):
        axes = grid_axes[index // columns][index % columns]
        values = np.full((data.axes.rows, data.axes.columns), np.nan)
        for (x, y), elite in project(data.elites[island], data.axes).items():
            if y < data.axes.rows and x < data.axes.columns:
                values[y, x] = elite.score
        image = axes.imshow(np.ma.masked_invalid(values), origin="lower", cmap="viridis",
                            vmin=vmin, vmax=vmax, aspect="auto")
        axes.set_facecolor("#dddddd")  # empty cells
        axes.set_title(f"island {island}: {int(np.isfinite(values).sum())} cells", fontsize=9)
        axes.set_xlabel(data.axes.names[0], fontsize=8)
        if len(data.axes.names) > 1:
            axes.set_ylabel(data.axes.names[1], fontsize=8)
    for index in range(len(islands), rows * columns):
        grid_axes[index // columns][index % columns].axis("off")
    if image is not None:
        figure.colorbar(image, ax=grid_axes, shrink=0.8, extend="min", label="elite score")
    return to_png(figure)


def success_rates(data: ReportData) -> bytes | None:
    """Share of proposals giving a valid child and a child better than its parent."""
    groups = [(title, rates) for title, rates in (("by operator", data.by_operator),
                                                   ("by model", data.by_model)) if rates]
    if not groups:
        return None
    figure, all_axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 0.5 + 0.35 * max(
        len(r) for _, r in groups) + 1.5), squeeze=False)
    for axes, (title, rates) in zip(all_axes[0], groups, strict=True):
        _rate_bars(axes, rates)
        axes.set_title(title)
    return to_png(figure)


def _rate_bars(axes: plt.Axes, rates: list[SuccessRate]) -> None:
    positions = np.arange(len(rates))
    axes.barh(positions - 0.2, [100 * r.valid_rate for r in rates], height=0.4,
              label="valid child", color="#4c72b0")
    axes.barh(positions + 0.2, [100 * r.improved_rate for r in rates], height=0.4,
              label="beats its parent", color="#55a868")
    axes.set_yticks(positions, [f"{r.name} ({r.proposals})" for r in rates], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("% of proposals")
    axes.legend(fontsize=7, loc="lower right")


def lineage(data: ReportData) -> bytes | None:
    """The best program's ancestors: score at each generation, labelled by operator."""
    points = [(i, row) for i, row in enumerate(data.lineage) if row.score is not None]
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(9, 3.8))
    axes.plot([i for i, _ in points], [row.score for _, row in points], marker="o")
    for i, row in points:
        axes.annotate(f"#{row.id} {row.operator}", (i, row.score), fontsize=7, rotation=30,
                      xytext=(3, 4), textcoords="offset points")
    axes.set_xlabel("ancestor (seed first)")
    axes.set_ylabel("score")
    axes.grid(alpha=0.3)
    return to_png(figure)


def errors(data: ReportData) -> bytes | None:
    """Failed evaluations by kind, and what became of every proposal."""
    if not data.errors and not data.outcomes:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for axes, pairs, title in ((left, data.errors, "invalid programs by error"),
                               (right, data.outcomes, "proposals by outcome")):
        if pairs:
            axes.barh([name for name, _ in pairs], [n for _, n in pairs], color="#c44e52")
            axes.invert_yaxis()
        else:
            axes.text(0.5, 0.5, "none", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(title, fontsize=10)
    return to_png(figure)


def train_vs_validation(data: ReportData) -> bytes | None:
    """Train against validation score for the top programs that have both."""
    pairs = [(row.score, row.validation_score, row.id) for row in data.top
             if row.score is not None and row.validation_score is not None]
    if not pairs:
        return None
    figure, axes = plt.subplots(figsize=(5, 4.5))
    xs, ys, ids = zip(*pairs, strict=True)
    axes.scatter(xs, ys)
    for x, y, program_id in pairs:
        axes.annotate(f"#{program_id}", (x, y), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    low, high = min(xs + ys), max(xs + ys)
    pad = 0.05 * (high - low or 1.0)
    axes.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", linestyle=":",
              label="validation = train")
    axes.set_xlabel("train score")
    axes.set_ylabel("validation score")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return to_png(figure)


def draw_all(data: ReportData) -> dict[str, bytes | None]:
    """Every figure of the page by name. Their labels quote stored text (operator and
    model names, error kinds, feature names), drawn as written: matplotlib would read
    ``$...$`` in them as math, and an unknown symbol there failed the whole report."""
    figures = {"curves": score_curves, "heatmap": heatmaps, "success": success_rates,
               "lineage": lineage, "errors": errors, "generalisation": train_vs_validation}
    with matplotlib.rc_context({"text.parse_math": False}):
        return {name: draw(data) for name, draw in figures.items()}
