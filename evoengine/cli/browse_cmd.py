"""``evo browse runs/<name>``: the archive browser (Textual; the ``tui`` extra)."""

from __future__ import annotations

import argparse
import math

from evoengine.errors import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "browse", help="browse a run's archive in the terminal (press ? for keys)",
        description="Open a run's archive: runs, programs (sort, filter), MAP-Elites grids, "
                    "program source, diff against the parent, lineage. Refreshes while the "
                    "run writes.")
    parser.add_argument("target", help="runs/<name>, an archive.db file, or a database URL")
    parser.add_argument("--run", dest="run_name", default=None,
                        help="open this run of a database that holds several")
    parser.add_argument("--poll", type=_seconds, default=2.0,
                        help="seconds between looks for new rows (0: never)")


def _seconds(text: str) -> float:
    """``--poll``'s value: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 "
                                         "(0: never look again)")
    return value


def command(args: argparse.Namespace) -> int:
    try:
        from evoengine.tui.app import BrowseApp
    except ImportError as exc:
        raise UserError("evo browse needs Textual: pip install 'evoengine[tui]'") from exc
    from evoengine.tui.queries import ArchiveReader
    from evoengine.tui.source import open_archive_engine

    reader = ArchiveReader(open_archive_engine(args.target))
    if args.run_name and args.run_name not in {r.name for r in reader.runs()}:
        raise UserError(f"no run named {args.run_name!r} in {args.target}; "
                        f"it holds: {', '.join(r.name for r in reader.runs()) or 'none'}")
    BrowseApp(reader, run_name=args.run_name, poll_s=args.poll).run()
    return 0
