"""``evo train SOURCE``: fit a LoRA adapter with TRL + PEFT on a run or an export."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="fine-tune the local mutation model (LoRA, DPO or GRPO)",
        description="Train a LoRA adapter on a run's archive (runs/<name> or a database "
                    "URL) or on a JSONL file from `evo export`, and save it with its "
                    "metadata (evo_train.json). rl.KEY=VALUE overrides, given right after "
                    "SOURCE, change rl.* settings, e.g. rl.steps=200 (see docs/rl.md).")
    parser.add_argument("source", help="runs/<name>, a database URL, or a .jsonl export")
    parser.add_argument("--method", choices=("dpo", "grpo"),
                        help="default: rl.method (for a .jsonl: its format)")
    parser.add_argument("--model", help="the local Hugging Face model folder "
                                        "(default: rl.model_path, else the run's llm.model)")
    parser.add_argument("--out", help="the adapter folder (default: <run>/adapters/<name>, "
                                      "or adapters/<name> for a .jsonl)")
    parser.add_argument("--name", help="the adapter's name (default: <method>-e<evals>)")
    parser.add_argument("--run", help="the run's name, when the database holds several")
    # right after the source (argparse takes positionals in one run): RUN rl.K=V --opt
    parser.add_argument("overrides", nargs="*", default=[], metavar="rl.KEY=VALUE")


def command(args: argparse.Namespace) -> int:
    from evoengine.rl.training import TrainingError, check_training_inputs

    source = args.source
    if source.endswith(".jsonl") and "://" not in source:
        rows, method, rl, model, run_dir, origin = _from_jsonl(args)
    else:
        rows, method, rl, model, run_dir, origin = _from_run(args)
    if model is None:
        raise TrainingError("name the model to adapt: --model DIR or rl.model_path=DIR "
                            "(a local Hugging Face folder)")
    check_training_inputs(rows, method, rl, model)  # before the slow imports and the print
    name = args.name or f"{method}-e{origin.evaluations or 0}"
    out = Path(args.out) if args.out else run_dir / name
    print(f"training a LoRA adapter ({method}, {len(rows)} examples, {rl.steps} steps) on "
          f"{model} -> {out}", flush=True)
    from evoengine.rl.training import train_adapter

    metadata = train_adapter(rows, method, rl, model, out, origin)
    print(f"adapter {name}: {metadata['steps']} steps in {metadata['seconds']:.1f} s, "
          f"loss {metadata['loss']:.4g} -> {out}")
    return 0


def _from_jsonl(args: argparse.Namespace):
    from evoengine.rl.datasets import DatasetError, detect_format, read_jsonl
    from evoengine.rl.settings import rl_config
    from evoengine.rl.training import TrainSource

    path = Path(args.source)
    rows = read_jsonl(path)
    rl = rl_config(None, args.overrides)
    found = detect_format(rows) if rows else rl.method
    method = args.method or found
    if found == "sft":
        raise DatasetError(f"{path} holds SFT rows; evo train takes DPO pairs or GRPO "
                           "groups (evo export --format dpo|grpo)")
    return (rows, method, rl, args.model or rl.model_path, Path("adapters"),
            TrainSource(data=str(path.resolve())))


def _from_run(args: argparse.Namespace):
    from evoengine.rl.archive_data import load_run, open_run
    from evoengine.rl.datasets import build_dataset
    from evoengine.rl.settings import rl_config
    from evoengine.rl.training import TrainSource

    _, run = open_run(args.source, args.run)
    rl = rl_config(run.config.get("rl"), args.overrides)
    method = args.method or rl.method
    archive = load_run(args.source, args.run)
    rows = build_dataset(archive, method, rl)
    llm = run.config.get("llm") or {}
    model = args.model or rl.model_path or (llm.get("model") if llm.get("provider") == "vllm"
                                            else None)
    if "://" in args.source:
        run_dir = Path(rl.output_dir or Path(run.config.get("runs_dir", "runs")) / run.name
                       / "adapters")
    else:
        run_dir = Path(rl.output_dir or Path(args.source) / "adapters")
    source = args.source if "://" in args.source else str(Path(args.source).resolve())
    return (rows, method, rl, model, run_dir,
            TrainSource(data=source, run=archive.name, evaluations=archive.evaluations,
                        extra={"proposals": len(archive.attempts)}))
