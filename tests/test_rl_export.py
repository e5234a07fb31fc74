"""`evo export` and `evo train` on the archive of a real `evo run ... llm=openai` run.

The run's model is the scripted OpenAI-protocol server (evoengine.llm.scripted_server),
a test double standing in for a model that cannot be reached here; the run itself
(real `openai` SDK, process sandbox, SQLite archive) is real. With one island and
concurrency 1 the same parent is prompted several times, so prompts repeat.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from evoengine.llm.scripted_server import ScriptedServer
from tests.conftest import evo_command

SEED_LINE = "    return -(bins - item)\n"


def _full(body: str) -> str:
    return ("```python\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n"
            f"    {body}\n# EVOLVE-BLOCK-END\n```")


def _diff(new: str) -> str:
    return f"<<<<<<< SEARCH\n{SEED_LINE}=======\n    {new}\n>>>>>>> REPLACE\n"


def _script():
    counter = itertools.count()

    def script(request: dict) -> str:
        n = next(counter)
        prompt = request["messages"][-1]["content"]
        if "could not be applied" in prompt:
            return "no blocks, only prose"
        if "<<<<<<< SEARCH" in prompt:
            steps = [_diff(f"return -(bins - item) * {n + 2}"),
                     "<<<<<<< SEARCH\n    return bins  # absent\n=======\n    return -bins\n"
                     ">>>>>>> REPLACE\n",
                     _diff(f"return (bins - item) * {n + 2}")]
        else:
            steps = [_full("raise ValueError('broken')"), _full(f"return -(bins - item) * {n + 2}"),
                     _full("return -(bins - item)"), _full(f"return (bins - item) + {n}")]
        return steps[n % len(steps)]

    return script


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rl-export")
    with ScriptedServer(_script()) as server:
        result = subprocess.run(evo_command(
            "run", "problem=bin_packing_quick", "llm=openai", f"llm.base_url={server.base_url}",
            "ui=plain", "sandbox=process", "search.num_islands=1", "search.llm_concurrency=1",
            "search.eval_concurrency=1", "llm.max_retries=0", "name=rl",
            "search.max_evaluations=16"), cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return root / "runs" / "rl"


def _export(run_dir: Path, fmt: str, *overrides: str) -> list[dict]:
    out = run_dir.parent / f"{fmt}-{len(overrides)}.jsonl"
    result = subprocess.run(evo_command("export", str(run_dir), *overrides, "--format", fmt,
                                        "--out", str(out)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{fmt} rows from" in result.stdout
    return [json.loads(line) for line in out.read_text().splitlines()]


def _prompts(run_dir: Path) -> dict[int, str]:
    with sqlite3.connect(run_dir / "archive.db") as conn:
        return dict(conn.execute("SELECT step, prompt FROM mutation_calls"))


def test_dpo_pairs_prefer_better_children_of_the_same_prompt(run_dir: Path) -> None:
    prompts = _prompts(run_dir)
    median_rows = _export(run_dir, "dpo")
    rows = _export(run_dir, "dpo", "rl.dpo_score_percentile=25")
    assert len(rows) > len(median_rows)  # a lower bar lets more chosen children in
    kinds = set()
    for row in rows:
        meta = row["meta"]
        assert prompts[meta["chosen_step"]] == prompts[meta["rejected_step"]]
        assert meta["chosen_score"] is not None and meta["chosen_score"] > meta["threshold"]
        if meta["rejected_kind"] == "valid":
            assert meta["rejected_score"] < meta["chosen_score"]
        kinds.add(meta["rejected_kind"])
        assert row["prompt"][0]["role"] == "system" and row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert row["chosen"] != row["rejected"]
    assert kinds - {"valid"}, "failures must appear, on the rejected side"
    for row in median_rows:
        assert row["meta"]["chosen_score"] > row["meta"]["threshold"]


def test_grpo_groups_carry_shaped_rewards(run_dir: Path) -> None:
    rows = _export(run_dir, "grpo")
    heavier = _export(run_dir, "grpo", "rl.rewards.crash=3", "rl.rewards.noop=0.25")
    assert rows and len(rows) == len(heavier)
    seen = set()
    for row, other in zip(rows, heavier, strict=True):
        assert len(row["completions"]) >= 2 and row["edit_kind"] in ("diff", "full")
        assert "EVOLVE-BLOCK-START" in row["parent_code"]
        for item, changed in zip(row["completions"], other["completions"], strict=True):
            kind, reward = item["kind"], item["reward"]
            seen.add(kind)
            if kind == "valid":
                assert 0.0 <= reward <= 1.0 and item["score"] is not None
            else:
                expected = {"noop": (-0.5, -0.25), "crash": (-1.0, -3.0),
                            "failed_edit": (-1.0, -1.0), "timeout": (-1.0, -1.0)}[kind]
                assert (reward, changed["reward"]) == expected
    assert {"valid", "crash", "noop", "failed_edit"} <= seen
    best = [c for row in rows for c in row["completions"] if c["reward"] == 1.0]
    assert best, "the run's best valid score normalises to 1"


def test_sft_rows_are_improvements_over_the_parent(run_dir: Path) -> None:
    rows = _export(run_dir, "sft")
    for row in rows:
        assert row["meta"]["score"] > row["meta"]["parent_score"]
        assert row["completion"][0]["role"] == "assistant"


def test_an_empty_export_says_what_would_make_rows(run_dir: Path, tmp_path: Path) -> None:
    """It used to blame the offline GP mutator whatever the run and format."""
    for fmt, override, why in (
            ("grpo", "rl.grpo_min_group_size=1000", "no prompt got "
             "rl.grpo_min_group_size=1000 answered proposals (groups need proposals that "
             "share a prompt); search longer"),
            ("dpo", "rl.dpo_score_percentile=100", "no prompt had a valid child above the "
             "run's rl.dpo_score_percentile=100 with a worse or failed sibling; search "
             "longer, or lower rl.dpo_score_percentile")):
        result = subprocess.run(evo_command("export", str(run_dir), override, "--format", fmt,
                                            "--out", str(tmp_path / f"{fmt}.jsonl")),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == f"no rows: {why}"


def test_evo_train_fits_an_adapter_on_the_run(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")  # the `rl` extra (installed by .ci/run)
    from evoengine.rl.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    out = tmp_path / "adapter"
    result = subprocess.run(evo_command(
        "train", str(run_dir), "rl.steps=1", "rl.batch_size=1", "rl.min_examples=1",
        "rl.lora_r=4", "rl.lora_targets=[q_proj,v_proj]", "rl.max_length=8192",
        "rl.dpo_score_percentile=25", "--method", "dpo", "--model", str(model),
        "--out", str(out)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((out / "evo_train.json").read_text())
    assert metadata["run"] == "rl" and metadata["evaluations"] == 16
    assert metadata["steps"] == 1 and metadata["examples"] >= 1
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()


def test_bad_input_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    missing = subprocess.run(evo_command("export", str(tmp_path), "--format", "dpo"),
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "holds no archive.db" in missing.stderr
    bad_key = subprocess.run(evo_command("export", str(run_dir),
                                         "rl.dpo_score_percentile=150", "--format", "dpo"),
                             capture_output=True, text=True, timeout=120)
    assert bad_key.returncode == 2
    assert "rl.dpo_score_percentile: must be within [0, 100]" in bad_key.stderr
    no_model = subprocess.run(evo_command("train", str(run_dir)), capture_output=True,
                              text=True, timeout=120)
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    # A folder that is no model, or too few examples: refused before training is
    # announced, before torch loads, and before an empty adapter folder is made.
    pairs = ("rl.min_examples=1", "rl.max_length=8192", "rl.dpo_score_percentile=25")
    for args, says in (((f"--model={tmp_path / 'nothing'}", *pairs),
                        "not a local Hugging Face"),
                       ((f"--model={tmp_path}", "rl.min_examples=100000"),
                        "fewer than rl.min_examples=100000")):
        refused = subprocess.run(evo_command("train", str(run_dir), *args), text=True,
                                 capture_output=True, timeout=120)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert "training a LoRA adapter" not in refused.stdout
        assert not (run_dir / "adapters").exists()
    # Overrides may also follow the options; an --out that cannot be written is one line.
    late_key = subprocess.run(evo_command("export", str(run_dir), "--format", "dpo",
                                          "rl.dpo_score_percentile=150"),
                              capture_output=True, text=True, timeout=120)
    assert late_key.returncode == 2
    assert "rl.dpo_score_percentile: must be within [0, 100]" in late_key.stderr
    # read with Hydra's grammar, as `evo run` reads overrides (YAML's reader raised)
    for override, says in (("rl.dpo_score_percentile=x: y: z", "could not be converted"),
                           ("rl.dpo_score_percentile=1,2", "one value per key")):
        odd = subprocess.run(evo_command("export", str(run_dir), override, "--format", "dpo"),
                             capture_output=True, text=True, timeout=120)
        assert odd.returncode == 2 and says in odd.stderr, odd.stderr
        assert "\n" not in odd.stderr.strip()
    (tmp_path / "a_file").write_text("")
    for command in (("export", str(run_dir), "--format", "sft"), ("report", str(run_dir))):
        unwritable = subprocess.run(evo_command(*command, "--out", str(tmp_path / "a_file" / "x")),
                                    capture_output=True, text=True, timeout=300)
        assert unwritable.returncode == 2, unwritable.stderr
        assert unwritable.stderr.strip().startswith(
            f"evo: error: cannot write {tmp_path / 'a_file'}"), unwritable.stderr
        assert "\n" not in unwritable.stderr.strip()

    # A database's stored run name chooses no folder: `evo run` allows only plain names,
    # but a shared or edited database may hold `../x` (the file went two folders up).
    shutil.copytree(run_dir, tmp_path / "renamed")
    with sqlite3.connect(tmp_path / "renamed" / "archive.db") as conn:
        conn.execute("UPDATE runs SET name = '../../escaped'")
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    traversal = subprocess.run(evo_command(
        "export", f"sqlite:///{tmp_path / 'renamed' / 'archive.db'}", "--format", "sft"),
        cwd=inner, capture_output=True, text=True, timeout=300)
    assert traversal.returncode == 2, traversal.stderr
    assert "is not a plain file name; give --out FILE" in traversal.stderr
    assert not (tmp_path / "escaped-sft.jsonl").exists() and not list(inner.iterdir())
