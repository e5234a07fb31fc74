"""Prompts as Jinja2 template files.

The built-in templates live in ``evoengine/mutation/templates``; ``llm.templates_dir``
names a folder whose files override them one by one (same file names), so a user can
change a single template without copying the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
)

from evoengine.mutation.types import ParentView

BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
EDIT_KINDS = ("diff", "full", "crossover")


def format_metrics(metrics: dict[str, object]) -> str:
    """``a=1.5, b=0.25``: numbers to 6 significant digits, keys sorted."""
    parts = []
    for key, value in sorted(metrics.items()):
        text = f"{value:.6g}" if isinstance(value, (int, float)) else str(value)
        parts.append(f"{key}={text}")
    return ", ".join(parts)


class PromptError(ValueError):
    """A template is missing or broken; the message names it."""


@dataclass(frozen=True)
class Prompt:
    """The chat messages of one request."""

    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user}]

    def as_text(self) -> str:
        """How the prompt is stored in the archive (and fed to RL datasets)."""
        return f"[system]\n{self.system}\n\n[user]\n{self.user}"


class PromptBuilder:
    """Renders the prompt of each edit kind for one problem."""

    def __init__(self, problem_name: str, description: str,
                 templates_dir: str | None = None) -> None:
        search_path = [str(BUILTIN_TEMPLATES)]
        if templates_dir:
            folder = Path(templates_dir).expanduser()
            if not folder.is_dir():
                raise PromptError(f"llm.templates_dir: {folder} is not a folder")
            search_path.insert(0, str(folder))
        # auto_reload off: each template is read once per run, not stat()ed at every
        # prompt; a run's prompts do not change under it when a template file is edited.
        self._env = Environment(loader=FileSystemLoader(search_path), autoescape=False,
                                undefined=StrictUndefined, keep_trailing_newline=True,
                                trim_blocks=True, lstrip_blocks=True, auto_reload=False)
        self._env.filters["metrics"] = format_metrics
        self.problem_name = problem_name
        self.description = description.strip()
        if templates_dir:  # a user's template with a syntax error stops the run at start
            self._compile_all()

    def _compile_all(self) -> None:
        for name in self._env.list_templates(extensions=["j2"]):
            try:
                self._env.get_template(name)
            except TemplateSyntaxError as exc:
                what = (exc.message or "syntax error").rstrip(".")
                raise PromptError(f"prompt template {exc.filename or name}, line "
                                  f"{exc.lineno}: {what}; fix it") from exc

    def _render(self, name: str, **context: object) -> str:
        try:
            return self._env.get_template(name).render(**context).strip() + "\n"
        except TemplateNotFound as exc:
            raise PromptError(f"prompt template {exc.name} not found") from exc
        except Exception as exc:  # a user's template with an error in it
            raise PromptError(f"prompt template {name}: {exc}") from exc

    def build(self, kind: str, parent: ParentView, inspirations: list[ParentView],
              feedback: str, second_parent: ParentView | None = None) -> Prompt:
        """The prompt asking for an edit of ``kind`` (diff, full or crossover)."""
        if kind not in EDIT_KINDS:
            raise PromptError(f"unknown edit kind {kind!r}")
        user = self._render(f"{kind}.j2", problem_name=self.problem_name,
                            description=self.description, parent=parent,
                            inspirations=inspirations, feedback=feedback.strip(),
                            second_parent=second_parent)
        return Prompt(system=self._render("system.j2"), user=user)

    def retry_unmatched(self, message: str) -> str:
        """The follow-up message after a SEARCH block did not match."""
        return self._render("retry_unmatched.j2", message=message)
