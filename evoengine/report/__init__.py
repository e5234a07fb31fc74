"""``evo report``: one self-contained HTML page about a run (the ``report`` extra).

``write_report`` reads the archive (a run folder, an ``archive.db`` or a URL), draws
the figures with matplotlib (Agg) and writes the page with every image embedded, so the
file can be mailed or archived on its own.
"""

from __future__ import annotations

from pathlib import Path


def write_report(target: str, out: Path, run_name: str | None = None) -> Path:
    """Write the report of ``target``'s run to ``out`` and return the path."""
    from evoengine.report.data import load_report_data, pick_run
    from evoengine.report.html import render_html
    from evoengine.tui.queries import ArchiveReader
    from evoengine.tui.source import open_archive_engine

    engine = open_archive_engine(target)
    try:
        reader = ArchiveReader(engine)
        data = load_report_data(reader, pick_run(reader, run_name))
        page = render_html(data, reader)
    finally:
        engine.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
