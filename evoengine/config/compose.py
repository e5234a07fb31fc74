"""Compose a run's configuration from ``conf/`` and command-line overrides with Hydra.

Problems are config-group options too: every ``problems/<name>/problem.yaml`` (in the
engine's own ``problems/`` and in ``./problems`` of the working directory) is
registered as ``problem=<name>``. ``problem=<directory>`` registers that folder under
its basename first, so a problem can live anywhere. A folder in OpenEvolve's format
(``initial_program.py`` + ``evaluator.py``, no ``problem.yaml``) is a problem too:
:mod:`evoengine.authoring.openevolve_format` reads it into a ``ProblemConfig``.

Every error a user can cause here is a :class:`ConfigError` whose message is one line
naming the key and what to do.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evoengine.config.checks import ConfigError, ConfigValueError
from evoengine.config.nulls import not_null_message
from evoengine.config.problem_folders import discover_problems, load_problem_yaml
from evoengine.config.schema import MAX_NAME_LENGTH, RunConfig
from evoengine.errors import causes, first_line
from evoengine.paths import resource_dir


def _register(overrides: list[str], config_name: str = "config") -> list[str]:
    """Register the chosen problem (and any problem its conf/problem file builds on)
    with the ConfigStore; rewrite ``problem=<dir>`` to its name. Only those are loaded:
    a broken problem folder elsewhere in ./problems stops nothing but its own runs."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    problems = discover_problems()
    rewritten = []
    chosen = _default_problem(config_name)
    for override in overrides:
        _check_group_choice(override)
        key, has_value, value = override.partition("=")
        if key == "problem" and has_value:
            chosen = _problem_choice(override_value(value), problems)
            override = f"problem={_quoted(chosen)}"
        rewritten.append(override)
    parse_overrides(rewritten, "a run")  # Hydra's own words for a bad one name none
    for name in _problems_needed(chosen, problems):
        store.store(group="problem", name=name, node=load_problem_yaml(problems[name]))
    return rewritten


def _problem_choice(value: str, problems: dict[str, Path]) -> str:
    """The problem ``problem=VALUE`` names: a known one, a problem folder (added to
    ``problems`` under its basename) or a ``conf/problem/<VALUE>.yaml``."""
    if not value.strip():
        raise ConfigError("problem: no problem given; give a problem name (problem=bin_packing; "
                          "`evo problems` lists them) or a problem folder (problem=path/to/dir)")
    if value in problems:
        return value
    folder = Path(value).expanduser()
    if folder.is_dir():
        problems[folder.resolve().name] = folder.resolve()
        return folder.resolve().name
    if folder.is_file():  # the seed, evaluator.py or problem.yaml instead of its folder
        raise ConfigError(f"problem: {value} is a file; give the problem's folder "
                          f"(problem={folder.parent})")
    if (resource_dir("conf") / "problem" / f"{value}.yaml").is_file():
        return value
    if "/" in value or value.startswith((".", "~")):  # a path, not a name
        raise ConfigError(f"problem: no folder {value} (from {Path.cwd()}); give a problem "
                          "folder's path or a name that `evo problems` lists")
    known = ", ".join(sorted(problems)) or "none"
    raise ConfigError(f"problem: unknown problem {value!r}; known: {known} "
                      "(or give a problem folder's path)")


def override_value(text: str) -> str:
    """An override's VALUE as Hydra's grammar reads it when that is a string (quotes
    taken off: ``'my dir/x'`` -> ``my dir/x``); else ``text`` as given (``~/x``, which
    the grammar refuses, or ``null``)."""
    try:
        value = _hydra_value(text)
    except OverrideParseException:
        return text
    return value if isinstance(value, str) else text


def _hydra_value(text: str) -> Any:
    """What Hydra's grammar makes of ``KEY=text``'s value."""
    return OverridesParser.create().parse_overrides([f"key={text}"])[0].value()


def _quoted(name: str) -> str:
    """``name`` as an override's VALUE that Hydra's grammar reads back as ``name``:
    as it is, or in quotes (a folder name with a space)."""
    for text in (name, f"'{name}'"):
        try:
            if _hydra_value(text) == name:
                return text
        except OverrideParseException:
            pass
    raise ConfigError(f"problem: a folder named {name!r} cannot be given as a problem; "
                      "rename it (letters, digits, spaces, - and _)")


def _check_group_choice(override: str) -> None:
    """``GROUP=VALUE`` for a config group other than ``problem`` (which takes folders
    too) must name one of ``conf/GROUP/*.yaml``: Hydra's own errors for a number or a
    list there ("Config group override must be a string or a list. Got int") name
    neither the group nor the choices."""
    group, has_value, value = override.partition("=")
    folder = resource_dir("conf") / group
    if not has_value or group == "problem" or not folder.is_dir():
        return
    choices = sorted(path.stem for path in folder.glob("*.yaml"))
    if override_value(value) not in choices:
        raise ConfigError(f"{group}: no option {value!r}; choose one of {', '.join(choices)} "
                          f"(e.g. {group}={choices[0]}), or set its keys as {group}.KEY=VALUE")


def _default_problem(config_name: str) -> str | None:
    """The ``problem:`` entry of ``conf/<config_name>.yaml``'s defaults list."""
    loaded = yaml.safe_load((resource_dir("conf") / f"{config_name}.yaml").read_text()) or {}
    for entry in loaded.get("defaults", []):
        if isinstance(entry, dict) and isinstance(entry.get("problem"), str):
            return entry["problem"]
    return None


def _problems_needed(name: str | None, problems: dict[str, Path]) -> list[str]:
    """``name`` if it is a problem folder; for a ``conf/problem/<name>.yaml``, the
    problem folders its defaults list names (``bin_packing_quick`` -> bin_packing)."""
    if name is None:
        return []
    if name in problems:
        return [name]
    packaged = resource_dir("conf") / "problem" / f"{name}.yaml"
    if not packaged.is_file():
        return []
    needed: list[str] = []
    for entry in (yaml.safe_load(packaged.read_text()) or {}).get("defaults", []):
        if isinstance(entry, str) and entry != "_self_" and entry != name:
            needed += [n for n in _problems_needed(entry, problems) if n not in needed]
    return needed


def compose_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``; raise ConfigError if bad."""
    overrides = _register(list(overrides), config_name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides)
    except Exception as exc:  # Hydra raises several unrelated types for user errors
        raise ConfigError(_hydra_message(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    return cfg


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Instantiate the typed config and check every value."""
    try:
        # Merging onto the schema rejects keys that Hydra's ``+key=`` let through.
        plain = OmegaConf.to_container(cfg, resolve=True)
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), plain)
        run_config = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_hydra_message(exc)) from exc
    assert isinstance(run_config, RunConfig)
    try:
        validate_tree(run_config)
    except ConfigValueError as exc:
        raise ConfigError(f"{exc}") from exc
    return run_config


def validate_tree(node: Any) -> None:
    """Call ``validate()`` on every dataclass in ``node``, depth first."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            validate_tree(getattr(node, f.name))
        if hasattr(node, "validate"):
            node.validate()
    elif isinstance(node, (list, tuple)):
        for item in node:
            validate_tree(item)
    elif isinstance(node, dict):
        for item in node.values():
            validate_tree(item)


def load_run_config(overrides: list[str]) -> tuple[RunConfig, DictConfig]:
    """Compose, type-check and validate; return the typed config and its YAML-able node."""
    cfg = compose_config(overrides)
    config = to_run_config(cfg)
    if config.name is not None and len(config.name) > MAX_NAME_LENGTH:
        raise ConfigError(f"name: is {len(config.name)} characters long; give at most "
                          f"{MAX_NAME_LENGTH} (it names the run's folder)")
    return config, cfg


# Keys that say which run this is: a resume that changed them would store a config
# that no longer describes the archive (the run itself goes on where it is).
_KEPT_ON_RESUME = {
    "db.url": "a resumed run stays in its database; to give a server's password, resume "
              "by the full URL: evo resume postgresql+psycopg://USER:PASSWORD@HOST/DB name=RUN",
    "problem.name": "a resumed run keeps its problem (the archive holds that problem's "
                    "programs); start a new run for another one",
}


def apply_overrides(stored: DictConfig, overrides: list[str]) -> DictConfig:
    """``overrides`` (KEY=VALUE, as `evo resume` takes them) onto a stored run's config.

    A resumed run keeps its config groups (its problem above all: the archive holds
    that problem's programs), so ``problem=tsp`` and the like are refused, as are
    Hydra's ``+KEY``/``~KEY``, which only `evo run` composes."""
    groups = {path.name for path in resource_dir("conf").iterdir() if path.is_dir()}
    for override in overrides:
        key, has_value, _ = override.partition("=")
        if not has_value or not key or key[0] in "+~":
            raise ConfigError(f"{override}: `evo resume` takes KEY=VALUE overrides of the run's "
                              "stored config (search.max_evaluations=500, say); +KEY and ~KEY "
                              "are for `evo run`")
        if key in groups:
            _check_group_choice(override)  # no such option: not worth a new run either
            raise ConfigError(f"{key}: a resumed run keeps its {key} config; change single "
                              f"values ({key}.KEY=VALUE), or start a new run: evo run {override}")
        if key in _KEPT_ON_RESUME:
            raise ConfigError(f"{key}: {_KEPT_ON_RESUME[key]}")
    try:
        return OmegaConf.merge(stored, overrides_patch(overrides, "a resume"))
    except OmegaConfBaseException as exc:
        raise ConfigError(_hydra_message(exc)) from exc


def parse_overrides(overrides: list[str], taker: str) -> list[Override]:
    """Read ``overrides`` with Hydra's override grammar (as `evo run` composes them, so
    `evo resume`, `evo export` and `evo train` read the same text the same way); a
    ConfigError names one that cannot be read, or that gives several values (a sweep,
    which Hydra calls an "Ambiguous value"; ``taker`` says what wants one value)."""
    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        try:
            parsed.extend(parser.parse_overrides([override]))
        except OverrideParseException as exc:
            raise ConfigError(
                f"{override}: cannot read this override ({_parse_failure(str(exc))}); write "
                "KEY=VALUE, one per argument, and quote a value that holds spaces, brackets or "
                "characters such as ~ # ? = (KEY='VALUE')") from None
        if parsed[-1].is_sweep_override():
            raise ConfigError(f"{override}: {taker} takes one value per key; write a list "
                              "in brackets ([a,b]) or quote a value that holds a comma")
    return parsed


def overrides_patch(overrides: list[str], taker: str, drop_prefix: str = "") -> DictConfig:
    """``overrides`` as a config to merge onto another (``drop_prefix`` taken off each
    key: ``rl.`` for the ``rl`` settings alone)."""
    patch = OmegaConf.create()
    for parsed in parse_overrides(overrides, taker):
        key = parsed.key_or_group
        OmegaConf.update(patch, key[len(drop_prefix):] if key.startswith(drop_prefix) else key,
                         parsed.value(), merge=False)
    return patch


def _parse_failure(text: str) -> str:
    """What Hydra's override parser stumbled on, in a few words on one line."""
    lines = [line for line in text.splitlines()
             if line.strip() and not line.startswith(("See https://", "Error parsing override"))]
    lexer = "LexerNoViableAltException: "
    if len(lines) >= 2 and lines[0].startswith(lexer) and "^" in lines[1]:
        echo, column = lines[0][len(lexer):], lines[1].index("^") - len(lexer)
        if 0 <= column < len(echo):
            return f"unexpected {echo[column]!r} at character {column + 1}"
    return lines[0] if lines else "not KEY=VALUE"


def _hydra_message(exc: BaseException) -> str:
    """Turn Hydra/OmegaConf's multi-line errors into one line that names the key."""
    text = "\n".join(str(cause) for cause in causes(exc))
    key = re.search(r"[Kk]ey '([^']+)' (?:is )?not in (?:struct|'\w+'\n\s*full_key: (\S+))", text)
    override = re.search(r"Could not override '([^']+)'", text)
    if key or override:
        name = override.group(1) if override else key.group(2) or key.group(1)
        return (f"{name}: unknown config key; check its spelling (`evo run --cfg` prints "
                "every key), or use +KEY=VALUE only for free-form maps")
    null = re.search(r"(?:is not Optional|is not optional and cannot be assigned None|"
                     r"Incompatible value 'None' for field of type '\w+')\n\s*full_key: (\S+)",
                     text)
    if null:
        return not_null_message(null.group(1))
    bad_value = re.search(r"Value '(.*?)' (?:of type '[^']*' )?(?:could not be converted to|"
                          r"is not a valid) (\w+)[^\n]*\n\s*full_key: (\S+)", text)
    if bad_value:
        value, kind, name = bad_value.groups()
        hint = "; use true or false" if kind == "bool" else ""
        return f"{name}: {value!r} is not a valid {kind}{hint}"
    not_a_mapping = re.search(r"Invalid type assigned: \w+ is not a subclass of (\w+)\. "
                              r"value: ([^\n]*)\n\s*full_key: (\S+)", text)
    if not_a_mapping:
        kind, value, name = not_a_mapping.groups()
        return (f"{name}: {value.strip()!r} must be a mapping with {_schema_keys(kind)}; "
                "e.g. {model: NAME, weight: 2}" if kind == "ModelConfig" else
                f"{name}: {value.strip()!r} must be a mapping with {_schema_keys(kind)}")
    missing_option = re.search(r"Could not find '([^']+)'", text)
    if missing_option:
        return f"{missing_option.group(1)}: no such config option; see conf/ for the choices"
    full_key = re.search(r"full_key: (\S+)", text)
    first = first_line(exc)
    return f"{full_key.group(1)}: {first}" if full_key else first


def _schema_keys(class_name: str) -> str:
    """``class_name``'s keys as a user writes them: ``keys model, weight, ...``."""
    from evoengine.config import llm_schema, rl_schema, scale_schema, schema

    for module in (schema, llm_schema, rl_schema, scale_schema):
        found = getattr(module, class_name, None)
        if dataclasses.is_dataclass(found):
            return "keys " + ", ".join(f.name for f in dataclasses.fields(found))
    return f"{class_name}'s keys"
