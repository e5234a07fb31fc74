"""A problem loaded from its folder: seed code, trusted scorer and instance sets."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from evoengine.config.schema import ProblemConfig
from evoengine.errors import UserError, read_utf8
from evoengine.evaluation.sandbox.base import HarnessJob
from evoengine.mutation.evolve_block import (
    END_MARKER,
    START_MARKER,
    EvolveBlockError,
    split_evolve_block,
)
from evoengine.paths import resource_dir

#: ``harness``/``scorer`` values under this prefix name the engine's reusable
#: evaluator kinds (DESIGN.md's ``evaluators/``) instead of files of the problem.
ENGINE_EVALUATORS = "evaluators/"


class ProblemError(ValueError):
    """The problem folder is incomplete or inconsistent; the message says what to fix."""


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a trusted host-side file (a problem's score.py) as a module."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the problem's own code, broken or exiting
        sys.modules.pop(module_name, None)
        raise ProblemError(f"{path}: importing it failed: {describe_error(exc)}; fix the "
                           "file") from exc
    return module


def describe_error(exc: BaseException, within: Path | None = None) -> str:
    """``ExcType: message (at file:line)``, the innermost frame: one line for a user.
    With ``within`` (a problem's folder), the innermost frame of a file in it, when
    there is one: where the problem's code called the library that raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    if within is not None:
        folder = within.resolve()
        frames = [f for f in frames if Path(f.filename).resolve().is_relative_to(folder)
                  ] or frames
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Problem:
    """Everything the engine needs to evaluate candidates of one problem."""

    def __init__(self, config: ProblemConfig) -> None:
        if not config.path:
            raise ProblemError(f"problem {config.name!r} has no folder")
        self.config = config
        self.folder = Path(config.path)
        self.name = config.name
        if not self.folder.is_dir():  # a resumed run keeps the folder it was started with
            raise ProblemError(f"problem.path: the folder of problem {self.name!r}, "
                               f"{self.folder}, is gone; put it back, or give its new "
                               "place with problem.path=DIR")
        for role, filename in (("seed", config.evolve_file), ("harness", config.harness),
                               ("scorer", config.scorer)):
            if not self.resolve(filename).is_file():
                raise ProblemError(f"{self.folder}: the {role} file {filename} is missing")
        self.initial_code = self._read_seed(config)
        self._check_entry(config)
        self.harness_path = self.resolve(config.harness)
        self.scorer = import_file(self.resolve(config.scorer),
                                  f"evoengine_problem_{self.name}_score")
        for function in ("load_instances", "score"):
            if not callable(getattr(self.scorer, function, None)):
                raise ProblemError(f"{self.resolve(config.scorer)} must define {function}()")
        self._instances: dict[str, list[Any]] = {}

    def resolve(self, filename: str) -> Path:
        """A problem file: in the problem's folder, or (``evaluators/...`` not found
        there) in the engine's reusable evaluators."""
        local = self.folder / filename
        if filename.startswith(ENGINE_EVALUATORS) and not local.exists():
            return resource_dir("evaluators") / filename[len(ENGINE_EVALUATORS):]
        return local

    def _read_seed(self, config: ProblemConfig) -> str:
        """The seed's code; with ``evolve_whole_file`` and no markers, all of it is
        wrapped in an EVOLVE-BLOCK (marker comments change nothing when it runs)."""
        path = self.folder / config.evolve_file
        code = read_utf8(path, ProblemError)
        try:
            body = split_evolve_block(code).body
            place = ("the EVOLVE-BLOCK holds", "between the markers")
        except EvolveBlockError as exc:
            no_markers = START_MARKER not in code and END_MARKER not in code
            if not (config.evolve_whole_file and no_markers):
                raise ProblemError(f"{path}: {exc}") from exc
            body = code if code.endswith("\n") or not code else code + "\n"
            code = f"{START_MARKER}\n{body}{END_MARKER}\n"
            place = ("it holds", "in it")
        if not any(line.strip() and not line.strip().startswith("#")
                   for line in body.splitlines()):
            raise ProblemError(f"{path}: {place[0]} no code, so there is nothing to evolve; "
                               "put the code to evolve (at least the function the search "
                               f"changes) {place[1]}")
        return code

    def _check_entry(self, config: ProblemConfig) -> None:
        """The seed must define ``problem.entry`` at top level: the harness calls it.
        An empty entry (OpenEvolve-format dirs: the evaluator decides) skips this."""
        if not config.entry:
            return
        try:
            tree = ast.parse(self.initial_code)
        except SyntaxError as exc:
            raise ProblemError(f"{self.folder / config.evolve_file} does not parse: "
                               f"{exc.msg} (line {exc.lineno})") from exc
        defined = {node.name for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if config.entry not in defined:
            raise ProblemError(f"{self.folder / config.evolve_file} defines no function "
                               f"{config.entry!r} (problem.entry); define it or fix "
                               "problem.yaml")

    @property
    def splits(self) -> list[str]:
        return list(self.config.splits)

    def instances(self, split: str) -> list[Any]:
        """The instances of ``split``, loaded once by the trusted scorer."""
        if split not in self.config.splits:
            raise ProblemError(f"problem {self.name!r} has no split {split!r}; "
                               f"it has {', '.join(self.config.splits)}")
        if split not in self._instances:
            spec = dict(self.config.splits[split].spec)
            where = f"{self.resolve(self.config.scorer)}: load_instances({split!r})"
            try:
                loaded = self.scorer.load_instances(split, spec, self.folder / "data")
                self._instances[split] = checked_instances(loaded, where)
            except ProblemError:
                raise
            except UserError as exc:  # an engine evaluator's: it names the file and the fix
                raise ProblemError(str(exc)) from exc
            except Exception as exc:  # the problem's own code
                raise ProblemError(f"{where} failed: "
                                   f"{describe_error(exc, self.folder)}") from exc
        return self._instances[split]

    def seed_failure_hint(self, first_line: str) -> str:
        """What to add to the error of a seed that fails with ``first_line``, when the
        failure sits in the problem's own evaluation code rather than in the seed: its
        harness (``at harness.py:``), or an OpenEvolve-format evaluator, which the
        engine's harness calls (its errors name ``evaluator.py`` or "the evaluator")."""
        harness = self.harness_path
        if harness.resolve().is_relative_to(self.folder.resolve()):
            if f"at {harness.name}:" in first_line:
                return (f"; it broke in the problem's {harness.name}: check it, and that "
                        "load_instances returns what it expects")
            return ""
        evaluator = self.config.splits["train"].spec.get("evaluator_file") \
            if "train" in self.config.splits else None
        if evaluator and (f"at {evaluator}:" in first_line or "the evaluator" in first_line):
            return (f"; it broke in the problem's {evaluator}, not necessarily in the seed: "
                    "check evaluate() and what it imports and returns")
        return ""

    def load_all_splits(self) -> None:
        """Load and check every split now, before a run stores anything: a split that
        cannot load would otherwise surface only when first used (validation after the
        whole search, test at ``evo eval``). Built-in problems take milliseconds."""
        for split in self.config.splits:
            self.instances(split)

    def job(self, split: str) -> HarnessJob:
        return HarnessJob(key=f"{self.folder}:{split}", harness_path=self.harness_path,
                          instances=self.instances(split),
                          module_name=Path(self.config.evolve_file).stem,
                          preload=tuple(self.config.preload),
                          candidate_process=self.config.candidate_process)


def checked_instances(loaded: object, where: str) -> list[Any]:
    """What ``load_instances`` returned, as a list, or ProblemError naming what is wrong:
    the harness gets the instances as JSON (one entry per instance) and the scorer
    the same list, so a mapping, a string, nothing, or an empty split is a bug of the
    problem, not of the seed program that would otherwise be blamed for it."""
    if isinstance(loaded, (str, bytes, Mapping)) or not isinstance(loaded, Iterable):
        raise ProblemError(f"{where} returned {type(loaded).__name__}; return a list with "
                           "one entry per instance")
    instances = list(loaded)
    if not instances:
        raise ProblemError(f"{where} returned no instances; a split needs at least one "
                           "(or remove the split from problem.yaml)")
    try:
        json.dumps(instances)  # as the sandbox will send them to the harness
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{where} returned instances that are not JSON data ({exc}); "
                           "use dicts, lists, strings, numbers, booleans and None") from exc
    return instances
