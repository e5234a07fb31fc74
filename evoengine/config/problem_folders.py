"""Problem folders: where they are found and how one is read into a ``ProblemConfig``.

A folder with a ``problem.yaml`` is a problem; so is one in OpenEvolve's format
(``initial_program.py`` + ``evaluator.py``, no ``problem.yaml``), which
:mod:`evoengine.authoring.openevolve_format` reads. Kept apart from Hydra's composition
(:mod:`evoengine.config.compose`) so that listing problems (`evo problems`) does not
import Hydra.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evoengine.authoring.openevolve_format import is_openevolve_dir, problem_dict
from evoengine.config.checks import ConfigError
from evoengine.config.nulls import not_null_message
from evoengine.config.schema import ProblemConfig
from evoengine.errors import first_line
from evoengine.paths import resource_dir


def problem_search_dirs() -> list[Path]:
    """Folders whose subfolders are problems: ``./problems`` first, then the engine's."""
    dirs = [Path.cwd() / "problems", resource_dir("problems")]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def load_problem_yaml(folder: Path) -> DictConfig:
    """Load and type-check ``folder/problem.yaml`` (or read an OpenEvolve-format dir);
    ``path`` is set to the folder."""
    yaml_path = folder / "problem.yaml"
    if is_openevolve_dir(folder):
        return OmegaConf.merge(OmegaConf.structured(ProblemConfig), problem_dict(folder))
    if not yaml_path.is_file():
        raise ConfigError(f"{folder} is not a problem folder: it has no problem.yaml, nor "
                          "initial_program.py + evaluator.py (OpenEvolve's format); see "
                          "`evo problems` for the known ones")
    loaded = load_yaml_file(yaml_path)
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{yaml_path}: must be a mapping of problem keys (name:, "
                          "description:, splits:, ...); see `evo new-problem`")
    if "name" in loaded and OmegaConf.select(loaded, "name") is None:
        del loaded["name"]  # as if left out: the folder names the problem
    try:
        node = OmegaConf.merge(OmegaConf.structured(ProblemConfig), loaded)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        if key and OmegaConf.select(loaded, key, default="") is None:  # "key: null"
            raise ConfigError(f"{yaml_path}: "
                              f"{not_null_message(key, ProblemConfig, ': ')}") from exc
        raise ConfigError(f"{yaml_path}: {first_line(exc)}") from exc
    node.path = str(folder.resolve())
    if OmegaConf.is_missing(node, "name") or node.name != folder.name:
        node.name = folder.name  # the folder names the problem (name: may be left out)
    return node


def load_yaml_file(path: Path) -> DictConfig | ListConfig:
    """``path`` read by OmegaConf; ConfigError with the file, line and problem if it is
    not readable YAML."""
    try:
        return OmegaConf.load(path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {exc.problem or exc.context}; "
                          "fix the file") from exc
    except (yaml.YAMLError, UnicodeDecodeError, OSError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML: {first_line(exc)}") from exc


def discover_problems() -> dict[str, Path]:
    """Known problems by name (``./problems`` wins over the engine's own)."""
    found: dict[str, Path] = {}
    for base in problem_search_dirs():
        for yaml_path in sorted(base.glob("*/problem.yaml")):
            found.setdefault(yaml_path.parent.name, yaml_path.parent)
        for evaluator in sorted(base.glob("*/evaluator.py")):
            if is_openevolve_dir(evaluator.parent):
                found.setdefault(evaluator.parent.name, evaluator.parent)
    return found
