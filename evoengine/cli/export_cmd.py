"""``evo export RUN --format dpo|grpo|sft [--out FILE]``: training data from an archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evoengine.errors import UserError, unwritable


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="write DPO pairs, GRPO groups or SFT rows of a run as JSONL",
        description="Datasets for fine-tuning the mutation model from a run's proposals "
                    "(see docs/rl.md). rl.KEY=VALUE overrides, given right after RUN, "
                    "change rl.* settings, e.g. rl.dpo_score_percentile=75.")
    parser.add_argument("source", help="runs/<name> (or a database URL)")
    parser.add_argument("--format", required=True, choices=("dpo", "grpo", "sft"))
    parser.add_argument("--out", help="the JSONL file ('-': stdout; default: "
                                      "<run>/rl/<format>.jsonl)")
    parser.add_argument("--run", help="the run's name, when the database holds several")
    # right after the source (argparse takes positionals in one run): RUN rl.K=V --opt
    parser.add_argument("overrides", nargs="*", default=[], metavar="rl.KEY=VALUE")


def command(args: argparse.Namespace) -> int:
    from evoengine.rl.archive_data import load_run, open_run
    from evoengine.rl.datasets import build_dataset, why_empty, write_jsonl
    from evoengine.rl.settings import rl_config

    _, run = open_run(args.source, args.run)
    rl = rl_config(run.config.get("rl"), args.overrides)
    archive = load_run(args.source, args.run)
    rows = build_dataset(archive, args.format, rl)
    summary = (f"{len(rows)} {args.format} rows from {len(archive.attempts)} model "
               f"proposals of run {archive.name} ({archive.evaluations} evaluations)")
    if args.out == "-":
        write_jsonl(rows, sys.stdout)
        print(summary, file=sys.stderr)
        return 0
    if args.out:
        out = Path(args.out)
    elif "://" in args.source:
        out = Path(f"{_plain_name(archive.name)}-{args.format}.jsonl")
    else:
        out = Path(args.source) / "rl" / f"{args.format}.jsonl"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as handle:
            write_jsonl(rows, handle)
    except OSError as exc:
        raise unwritable(exc, out) from exc
    print(f"{summary} -> {out}")
    if not rows:
        print(f"no rows: {why_empty(archive, args.format, rl)}")
    return 0


def _plain_name(name: str) -> str:
    """The run's name as the start of a file name in this folder. ``evo run`` allows no
    other, but a database may be shared or edited: a stored ``../x`` or ``/x`` must not
    choose where the file goes."""
    if "/" in name or "\x00" in name:
        raise UserError(f"the run's stored name {name!r} is not a plain file name; give "
                        "--out FILE")
    return name
