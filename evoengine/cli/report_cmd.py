"""``evo report runs/<name> [--out FILE]``: a self-contained HTML report of a run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from evoengine.errors import UserError, unwritable

REPORT_FILE = "report.html"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report", help="write an HTML report of a run (plots embedded; works mid-run)",
        description="Write one HTML file: score curves per island, MAP-Elites heatmaps, "
                    "success by operator and model, the best program's lineage, errors, "
                    "train vs validation.")
    parser.add_argument("target", help="runs/<name>, an archive.db file, or a database URL")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write it (default: runs/<name>/{REPORT_FILE})")
    parser.add_argument("--run", dest="run_name", default=None,
                        help="the run to report, in a database that holds several")


def default_out(target: str, run_name: str | None) -> Path:
    """Beside the archive for a run folder; in the working folder for a URL."""
    path = Path(target)
    if "://" not in target and path.is_dir():
        return path / REPORT_FILE
    if "://" not in target and path.is_file():
        return path.parent / REPORT_FILE
    return Path(f"report-{run_name}.html" if run_name else REPORT_FILE)


def command(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UserError("evo report needs matplotlib: pip install 'evoengine[report]'") from exc
    from evoengine.report import write_report

    out = args.out or default_out(args.target, args.run_name)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out}/report.html")
    folder = out.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):  # before rendering
        reason = (f"there is no folder {folder}" if not folder.is_dir()
                  else f"the folder {folder} is not writable")
        raise UserError(f"cannot write {out}: {reason}; give --out a path in a folder you "
                        "can write to")
    try:
        written = write_report(args.target, out, args.run_name)
    except OSError as exc:
        raise unwritable(exc, out) from exc
    print(f"report written to {written} (open it in a browser)")
    return 0
