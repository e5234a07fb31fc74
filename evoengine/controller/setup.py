"""Build everything a run needs from its config: folder, database, archive, problem,
sandbox and mutator. ``start_run`` makes a new run; ``reopen_run`` resumes one."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from evoengine.archive.archive import Archive
from evoengine.archive.grid import FeatureSpace
from evoengine.archive.run_lock import RunLock
from evoengine.archive.store import (
    ArchiveStore,
    RunNameTaken,
    StoreError,
    make_engine,
    sqlite_url,
)
from evoengine.config.changes import config_changes, describe_changes
from evoengine.config.compose import ConfigError, apply_overrides, to_run_config
from evoengine.config.problem_folders import load_yaml_file
from evoengine.config.schema import RunConfig
from evoengine.controller.run_folder import (
    CONFIG_FILE,
    clear_unstarted_archive,
    holds_no_run,
    save_config,
)
from evoengine.evaluation.evaluator import Evaluator
from evoengine.evaluation.problem import Problem
from evoengine.evaluation.sandbox.base import Limits, SandboxBackend
from evoengine.evaluation.sandbox.factory import make_backend
from evoengine.llm.factory import make_mutator
from evoengine.llm.price_table import unpriced_note
from evoengine.llm.recording import CallLog
from evoengine.llm.sandbox_proxy import SandboxLLMProxy, proxy_for
from evoengine.mutation.novelty import NoveltyFilter, make_novelty_filter
from evoengine.mutation.self_modify import SELF_MODIFY_NOTE, SelfModifyMutator, check_self_modify
from evoengine.mutation.types import Mutator
from evoengine.paths import ARCHIVE_FILE
from evoengine.terminal import command_line

# Generated run names of one second: NAME, NAME-2, ... NAME-99.
_MAX_NAME_TRIES = 99


@dataclass
class RunContext:
    config: RunConfig
    run_dir: Path
    db_url: str
    store: ArchiveStore
    archive: Archive
    problem: Problem
    evaluator: Evaluator
    backend: SandboxBackend
    mutator: Mutator
    notes: list[str]  # one-line announcements: which mutator, which sandbox
    next_step: int
    prior_elapsed_s: float = 0.0
    prior_cost: float = 0.0
    novelty: NoveltyFilter | None = None  # mutation.novelty: skips near-copies
    lock: RunLock | None = None  # this process drives the run (archive/run_lock.py)


def limits_for(config: RunConfig) -> Limits:
    return Limits(timeout_s=config.problem.timeout_s, cpu_s=config.problem.cpu_s,
                  memory_mb=config.problem.memory_mb,
                  max_processes=config.sandbox.max_processes,
                  max_file_mb=config.sandbox.max_file_mb,
                  max_output_bytes=config.sandbox.max_output_mb * 1024 * 1024)


def feature_space(config: RunConfig) -> FeatureSpace:
    dims = config.search.features or [config.search.code_length, *config.problem.features]
    return FeatureSpace(dims)


@dataclass
class _Parts:
    """What a run needs besides its storage; built first so bad input stores nothing."""

    problem: Problem
    mutator: Mutator
    mutator_note: str
    space: FeatureSpace
    call_log: CallLog  # model calls go to the run's llm_calls once its store exists
    novelty: NoveltyFilter | None
    novelty_note: str
    proxy: SandboxLLMProxy | None = None  # the model candidates call (problems/agent)
    proxy_note: str = ""
    cost_note: str = ""  # models whose calls a cost budget cannot see

    @classmethod
    def build(cls, config: RunConfig) -> _Parts:
        problem = Problem(config.problem)
        problem.load_all_splits()
        call_log = CallLog()
        mutator, note = make_mutator(config.llm, config.problem, call_log)
        proxy, proxy_note = proxy_for(config, mutator.name, call_log)
        if config.mutation.self_modify:
            check_self_modify(problem, proxy)
        novelty, novelty_note = make_novelty_filter(config.mutation)
        cost_note = (unpriced_note(config.llm)
                     if config.search.max_cost > 0 and hasattr(mutator, "ensemble") else "")
        return cls(problem, mutator, note, feature_space(config), call_log, novelty,
                   novelty_note, proxy, proxy_note, cost_note)

    def assemble(self, config: RunConfig, run_dir: Path, db_url: str, store: ArchiveStore,
                 next_step: int) -> RunContext:
        self.call_log.bind(store)
        backend, sandbox_note = make_backend(config.sandbox, config.executor, config.ray)
        evaluator = Evaluator(self.problem, backend, limits_for(config), self.proxy)
        mutator, mutator_note = self.mutator, self.mutator_note
        if config.mutation.self_modify:  # children by the parent agent's own improve()
            mutator, mutator_note = SelfModifyMutator(evaluator), SELF_MODIFY_NOTE
        return RunContext(
            config=config, run_dir=run_dir, db_url=db_url, store=store,
            archive=Archive(config.search, self.space, config.seed), problem=self.problem,
            evaluator=evaluator, backend=backend, mutator=mutator,
            notes=[n for n in (mutator_note, self.proxy_note, sandbox_note,
                               self.novelty_note, self.cost_note) if n],
            next_step=next_step, novelty=self.novelty)


def start_run(config: RunConfig) -> RunContext:
    """Create the run folder and its database row; fails if the run already exists."""
    parts = _Parts.build(config)
    generated = config.name is None
    taken: set[str] = set()  # generated names another run holds in a shared database
    while True:
        run_dir, made = _make_run_dir(config, taken)
        db_url = config.db.url or sqlite_url(run_dir / ARCHIVE_FILE)
        engine = None
        try:
            engine = make_engine(db_url, config.db.echo)
            plain = storable_config(config)
            # The row first: on a shared database the name may be taken, and then the
            # folder of that run (its config.yaml) must stay as it is.
            store = ArchiveStore.create_run(engine, config.name, config.problem.name,
                                            config.seed, plain)
            break
        except BaseException as exc:
            if made:  # ours and still empty (db.url elsewhere): the name stays free
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            # runs started in the same second on other machines (a job array on one
            # server): a generated name moves on to the next free one, as for folders
            if not (generated and isinstance(exc, RunNameTaken)
                    and len(taken) < _MAX_NAME_TRIES):
                raise
            assert config.name is not None and engine is not None
            taken.add(config.name)
            config.name = None
            engine.dispose()
    lock = None
    try:
        lock = RunLock.acquire(engine, store.run_id, config.name)
        save_config(run_dir, plain)
        context = parts.assemble(config, run_dir, db_url, store, next_step=0)
    except BaseException as exc:  # Ctrl-C, say: the row must not say "running" for good
        with contextlib.suppress(Exception):
            store.set_status("interrupted" if isinstance(exc, KeyboardInterrupt)
                             else "failed", 0.0, 0.0)
        if lock is not None:
            lock.release()
        raise
    context.lock = lock
    return context


def _make_run_dir(config: RunConfig, taken: frozenset[str] | set[str] = frozenset()
                  ) -> tuple[Path, bool]:
    """``runs_dir/name``, made, and whether this call made it (a named run's folder
    may be there already). Without ``name=``, a fresh folder named after the problem
    and the time, claimed by ``mkdir`` (another run started in the same second, even in
    another process, gets ``...-2``), and not one of the ``taken`` names; ``config.name``
    is set to it."""
    if config.name is not None:
        run_dir = Path(config.runs_dir) / config.name
        if clear_unstarted_archive(run_dir):  # a start that was cut short: start again
            print(f"note: {run_dir} held the archive of a start that was cut short, with "
                  "no run in it; starting afresh there")
        if (run_dir / ARCHIVE_FILE).exists():
            raise StoreError(f"{run_dir} already holds a run; continue it with "
                             f"`{command_line('evo', 'resume', run_dir)}` or choose another "
                             "name=")
        made = not run_dir.is_dir()
        try:
            _mkdir(run_dir, exist_ok=True)
        except FileExistsError:  # a file of that name
            raise ConfigError(f"name: {run_dir} is a file, not a run folder; choose another "
                              "name=") from None
        return run_dir, made
    base = f"{config.problem.name}-{datetime.now():%Y%m%d-%H%M%S}"
    for name in (base, *(f"{base}-{n}" for n in range(2, _MAX_NAME_TRIES + 1))):
        if name in taken:
            continue
        run_dir = Path(config.runs_dir) / name
        try:
            _mkdir(run_dir, exist_ok=False)
        except FileExistsError:
            continue
        config.name = name
        return run_dir, True
    raise ConfigError(f"runs_dir: {config.runs_dir} (or the database) already holds runs "
                      f"{base} to {base}-{_MAX_NAME_TRIES}; give name=")


def _mkdir(run_dir: Path, exist_ok: bool) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigError(f"runs_dir: cannot create {run_dir} ({exc.strerror}); give a "
                          "folder you can write to, e.g. runs_dir=runs") from exc


def storable_config(config: RunConfig) -> dict[str, Any]:
    """The config as the run keeps it (its ``config.yaml`` and database row): with no
    password in ``db.url``. A resume connects without one, so the server's own means
    supply it (for PostgreSQL: ``PGPASSWORD`` or ``~/.pgpass``), or the full URL is
    given again: ``evo resume postgresql://user:password@host/db name=<run>``."""
    plain = dataclasses.asdict(config)
    if config.db.url:
        try:
            url = make_url(config.db.url)
        except ArgumentError:
            raise ConfigError(f"db.url is not a database URL: {config.db.url!r}; write it "
                              "as dialect+driver://user@host/database") from None
        bare = URL.create(url.drivername, url.username, None, url.host, url.port,
                          url.database, url.query)  # (URL.set skips a None password)
        plain["db"]["url"] = bare.render_as_string(hide_password=False)
    return plain


def reopen_run(run_dir: Path | str, overrides: list[str]) -> RunContext:
    """Reopen ``run_dir`` (or a database URL) with its stored config plus ``overrides``.

    A run on a database server (``db.url``) keeps only its ``config.yaml`` in its
    folder: the folder leads to the URL and the run's name. Given a URL of a database
    holding several runs, ``name=`` among the overrides picks one."""
    run_name = _override_value(overrides, "name")
    url = _as_url(run_dir)
    if url is not None:
        db_url = url
    else:
        db_path = Path(run_dir) / ARCHIVE_FILE
        server_run = _server_run_of(Path(run_dir))
        if db_path.is_file() and holds_no_run(db_path):
            raise StoreError(f"{run_dir} holds no run: its start was cut short before the "
                             f"run was stored; start it again with `evo run ... "
                             f"name={Path(run_dir).name}`")
        if db_path.is_file():
            db_url = sqlite_url(db_path)
        elif server_run is not None:
            db_url, run_name = server_run
        else:
            raise StoreError(f"{run_dir} holds no {ARCHIVE_FILE}; give the folder of a run "
                             "started with `evo run` (see runs/)")
    engine = make_engine(db_url, existing=True)
    store, run = ArchiveStore.open_run(engine, run_name)
    lock = RunLock.acquire(engine, store.run_id, run.name)  # before anything is written
    try:
        stored = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(run.config))
        config = to_run_config(apply_overrides(stored, overrides))
        engine.echo = config.db.echo  # the stored setting, or the override given now
        parts = _Parts.build(config)
        _check_grid_fits(config, store)
        if url is not None:
            run_dir = Path(config.runs_dir) / run.name
            run_dir.mkdir(parents=True, exist_ok=True)
        context = parts.assemble(config, Path(run_dir), db_url, store,
                                 next_step=store.last_step() + 1)
        programs = store.iter_programs()
        if context.novelty is not None:  # the same pass refills each island's window
            programs = context.novelty.remember_all(programs)
        context.archive.rebuild(programs)
        ensemble = getattr(context.mutator, "ensemble", None)
        if ensemble is not None and len(ensemble) > 1:  # rebuilt from the stored calls
            calls = ensemble.from_history(store.iter_model_calls())
            context.notes.append(f"ensemble rebuilt from {calls} stored calls: "
                                 f"{ensemble.describe()}")
        context.prior_elapsed_s = run.elapsed_s
        context.prior_cost = run.cost
        plain = storable_config(config)
        # (the stored config as stored: not validated again, as rules may have changed)
        context.notes.extend(describe_changes(
            config_changes(OmegaConf.to_container(stored, resolve=True), plain)))
        store.set_config(plain)  # last: a resume that fails leaves the run's config as it was
        try:  # the folder's copy follows: config.yaml is the config the run goes on with
            save_config(Path(run_dir), plain)
        except OSError as exc:
            context.notes.append(f"note: {Path(run_dir) / CONFIG_FILE} not updated "
                                 f"({exc.strerror or exc}); the database holds the config")
    except BaseException:
        lock.release()
        raise
    context.lock = lock
    return context


def unreported_axis(config: RunConfig, problem_name: str, axes: list[str],
                    features: dict[str, Any]) -> str | None:
    """The one-line error for a grid axis the problem's scorer does not report (every
    program would sit at 0 on it), or None when it reports them all."""
    unreported = [name for name in axes if name not in features]
    if not unreported:
        return None
    where = ("search.features" if config.search.features
             else f"problem.features (problem {problem_name!r})")
    return (f"{where}: the grid axis {unreported[0]!r} is not a feature the problem's "
            f"scorer reports (the seed's: {', '.join(sorted(features))}); name one of those")


def _check_grid_fits(config: RunConfig, store: ArchiveStore) -> None:
    """A resume may regrid the stored programs (other bins or ranges, more islands) but
    not drop islands that hold programs, nor use an axis their scores do not have."""
    islands, features = store.grid_facts()
    if config.search.num_islands < islands:
        raise ConfigError(f"search.num_islands: the run has programs on {islands} islands; "
                          f"a resume can add islands but not remove them (give "
                          f"search.num_islands={islands} or more)")
    if features is not None:
        problem = unreported_axis(config, config.problem.name, feature_space(config).names,
                                  features)
        if problem is not None:
            raise ConfigError(problem)


def _as_url(run_dir: Path | str) -> str | None:
    """``run_dir`` as a database URL (given as a string), or None for a folder."""
    return run_dir if isinstance(run_dir, str) and "://" in run_dir else None


def _server_run_of(run_dir: Path) -> tuple[str, str] | None:
    """``(db.url, name)`` from the ``config.yaml`` of a run kept on a database server."""
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    saved = load_yaml_file(config_path)
    url = OmegaConf.select(saved, "db.url", default=None)
    name = OmegaConf.select(saved, "name", default=None)
    return (str(url), str(name)) if url and name else None


def _override_value(overrides: list[str], key: str) -> str | None:
    for override in overrides:
        if override.startswith(f"{key}="):
            return override.split("=", 1)[1]
    return None
