"""Assemble the self-contained HTML page: the figures as base64 PNG data URIs and the
tables, through a Jinja2 template (``templates/report.html.j2``), HTML-escaped."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from evoengine.report import plots
from evoengine.report.data import ReportData
from evoengine.tui.queries import ArchiveReader
from evoengine.tui.render import format_score

_TEMPLATES = Path(__file__).resolve().parent / "templates"


def _encode(png: bytes | None) -> str | None:
    return base64.b64encode(png).decode("ascii") if png else None


def render_html(data: ReportData, reader: ArchiveReader) -> str:
    """The whole page; nothing it shows is fetched from elsewhere."""
    encoded = {name: _encode(png) for name, png in plots.draw_all(data).items()}
    lineage, previous = [], None
    for row in data.lineage:
        change = ("" if row.score is None or previous is None
                  else f"{row.score - previous:+.4g}")
        lineage.append((row, change))
        previous = row.score if row.score is not None else previous
    best = reader.program(data.lineage[-1].id) if data.lineage else None
    environment = Environment(loader=FileSystemLoader(str(_TEMPLATES)),
                              autoescape=select_autoescape(["html", "j2"]))
    template = environment.get_template("report.html.j2")
    return template.render(
        run=data.run, read_at=f"{data.read_at:%Y-%m-%d %H:%M:%S} UTC", axes=data.axes,
        has_valid=data.has_valid, plots=encoded, by_operator=data.by_operator,
        by_model=data.by_model, lineage=lineage, best=best,
        error_by_operator=data.error_by_operator, top=data.top, fmt=format_score)
