"""Prompts carry what the model needs, and users can override templates by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from evoengine.config.compose import ConfigError, load_run_config
from evoengine.mutation.prompts import PromptBuilder, PromptError
from evoengine.mutation.types import ParentView

CODE = "import numpy as np\n\n# EVOLVE-BLOCK-START\ndef priority(item, bins):\n" \
       "    return -(bins - item)\n# EVOLVE-BLOCK-END\n"


def _views() -> tuple[ParentView, list[ParentView]]:
    parent = ParentView(1, CODE, -4.31, {"excess_pct": 4.31}, "uses 4.31% more bins")
    top = ParentView(2, CODE.replace("item)", "item) ** 2"), -4.2, {}, "")
    other_cell = ParentView(3, CODE.replace("-(", "np.log("), -6.0, {}, "")
    return parent, [top, other_cell]


@pytest.mark.parametrize("kind", ["diff", "full", "crossover"])
def test_prompt_has_problem_parent_feedback_inspirations_and_format(kind: str) -> None:
    parent, inspirations = _views()
    builder = PromptBuilder("bin_packing", "Online bin packing; fewer bins is better.")
    second = inspirations[-1] if kind == "crossover" else None
    prompt = builder.build(kind, parent, inspirations, parent.feedback, second)
    text = prompt.as_text()
    assert "Online bin packing" in text and "EVOLVE-BLOCK-START" in prompt.system
    assert "score -4.31" in text and "excess_pct=4.31" in text
    assert "uses 4.31% more bins" in text
    if kind == "crossover":
        assert "Parent B (score -6)" in text and "np.log(" in text
    else:
        assert "Inspiration 1 (score -4.2)" in text and "Inspiration 2 (score -6)" in text
    expected_format = "<<<<<<< SEARCH" if kind == "diff" else "```python fenced code block"
    assert expected_format in text
    assert [m["role"] for m in prompt.messages()] == ["system", "user"]


def test_templates_can_be_overridden_one_by_one(tmp_path: Path) -> None:
    (tmp_path / "system.j2").write_text("You write very short code for {{ 'us' }}.")
    builder = PromptBuilder("bin_packing", "Pack.", templates_dir=str(tmp_path))
    parent, inspirations = _views()
    prompt = builder.build("diff", parent, inspirations, "")
    assert prompt.system.strip() == "You write very short code for us."
    assert "<<<<<<< SEARCH" in prompt.user  # the other templates are still the built-in ones


def test_broken_or_missing_template_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="llm.templates_dir"):
        PromptBuilder("p", "d", templates_dir=str(tmp_path / "missing"))
    (tmp_path / "full.j2").write_text("{{ no_such_variable }}")
    builder = PromptBuilder("p", "d", templates_dir=str(tmp_path))
    parent, inspirations = _views()
    with pytest.raises(PromptError, match="full.j2"):
        builder.build("full", parent, inspirations, "")
    # a syntax error is found when the run starts, not at the first prompt of that kind
    (tmp_path / "diff.j2").write_text("line one\n{% if parent %}never closed\n")
    with pytest.raises(PromptError) as error:
        PromptBuilder("p", "d", templates_dir=str(tmp_path))
    assert str(error.value) == (
        f"prompt template {tmp_path / 'diff.j2'}, line 2: Unexpected end of template. Jinja "
        "was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost "
        "block that needs to be closed is 'if'; fix it")


def test_llm_config_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="llm.temperature"):
        load_run_config(["llm=openai", "llm.temperature=5"])
    with pytest.raises(ConfigError, match="llm.provider"):
        load_run_config(["llm.provider=cohere"])
    with pytest.raises(ConfigError, match="llm.http_client.*auto, aiohttp or httpx"):
        load_run_config(["llm=openai", "llm.http_client=requests"])
