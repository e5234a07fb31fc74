"""``evo new-problem``: write a working problem folder from the template files.

The templates (``templates/problem/``, shipped inside the package) make a small but
complete problem: a seed with EVOLVE-BLOCK markers, a harness, a strict scorer,
train/validation/test data and a test file, so that ``evo eval`` and ``evo run``
work on it at once and the user replaces the task piece by piece. ``$name`` and
``$folder`` in a template are replaced (``string.Template``); ``.tmpl`` is dropped
from file names and ``test_problem.py`` becomes ``test_<name>.py``.
"""

from __future__ import annotations

import keyword
import re
import string
from pathlib import Path

from evoengine.errors import UserError
from evoengine.paths import resource_dir

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "problem"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ScaffoldError(UserError):
    """The problem folder cannot be made; the message says why and what to do."""


def check_name(name: str) -> None:
    """A problem name is a lowercase identifier: it names a folder, a config option
    (``problem=NAME``) and a Python module prefix."""
    if keyword.iskeyword(name):
        raise ScaffoldError(f"{name!r} is a Python keyword and cannot name a problem; "
                            f"choose another, e.g. {name}_problem")
    if not NAME_PATTERN.fullmatch(name):
        raise ScaffoldError(f"{name!r} is not a valid problem name; use lowercase letters, "
                            "digits and _ (starting with a letter, at most 64), e.g. my_tsp")


def check_not_builtin(name: str) -> None:
    """Refuse the name of one of the engine's own problems: the new folder would take
    its place (``./problems`` wins) in every run started beside it."""
    own = {path.name for path in resource_dir("problems").iterdir() if path.is_dir()}
    own |= {path.stem for path in (resource_dir("conf") / "problem").glob("*.yaml")}
    if name in own:
        raise ScaffoldError(f"{name!r} is one of evoengine's own problems; a new folder of "
                            "that name would replace it in runs started here; choose "
                            f"another name, e.g. my_{name}")


def scaffold_problem(name: str, parent: Path) -> Path:
    """Create ``parent/name`` from the templates; never touch an existing folder."""
    check_name(name)
    check_not_builtin(name)
    folder = parent / name
    if folder.exists() or folder.is_symlink():  # a dangling symlink does not exist()
        raise ScaffoldError(f"{folder} already exists; choose another name or remove it "
                            "first (nothing was written)")
    values = {"name": name, "folder": str(folder)}
    files = {}
    for template in sorted(TEMPLATE_DIR.rglob("*")):
        if not template.is_file():
            continue
        relative = template.relative_to(TEMPLATE_DIR).as_posix().removesuffix(".tmpl")
        if relative == "test_problem.py":
            relative = f"test_{name}.py"
        text = template.read_text(encoding="utf-8")
        files[relative] = string.Template(text).safe_substitute(values)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:  # --dir is a file, not writable, ...
        raise ScaffoldError(f"cannot create {folder}: {exc.strerror or exc} (nothing was "
                            "written)") from exc
    try:
        for relative, text in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"cannot write {folder}: {exc.strerror or exc}; remove the "
                            "partial folder and try again") from exc
    return folder
