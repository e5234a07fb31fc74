"""Create and migrate the archive schema with Alembic, every time a store opens.

The revisions live in ``evoengine/archive/migrations`` (shipped inside the package),
so an installed ``evo`` can bring any archive it meets up to date: a new database
gets every revision, an older one the revisions it lacks. An archive made before
Alembic took over (its tables made by ``Base.metadata.create_all``, no
``alembic_version`` table) is adopted: stamped at the first revision (after adding
``mutation_calls.adapter`` if it predates that column), never recreated.

Several processes may open one PostgreSQL archive at once (a controller per run, a
browser): the whole check-and-upgrade runs in one transaction under a
transaction-scoped advisory lock, so exactly one of them migrates and the others see
the finished schema.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from evoengine.errors import UserError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001_initial"
# The tables of FIRST_REVISION: an archive without alembic_version that has them is
# adopted at it.
FIRST_REVISION_TABLES = frozenset({"runs", "programs", "evaluations", "mutation_calls",
                                   "llm_calls"})
# pg_advisory_xact_lock key: any constant shared by every evoengine process.
_ADVISORY_LOCK_KEY = 0x65766F5F61726368 & 0x7FFFFFFFFFFFFFFF  # "evo_arch"


class SchemaError(UserError):
    """The database holds something evoengine cannot migrate; the message says what."""


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection`` (or, for
    the ``alembic`` command line when authoring a revision, to ``url``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the packaged migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the database at ``engine`` to the newest schema (a no-op when it is)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": _ADVISORY_LOCK_KEY})
        revision = current_revision(conn)
        if revision == head_revision():
            return
        config = alembic_config(conn)
        if revision is None:
            _adopt_pre_alembic_archive(conn, config)
        elif revision not in _known_revisions():
            raise SchemaError(f"the archive's schema is at revision {revision!r}, which this "
                              "evoengine does not know; it was written by a newer version: "
                              "upgrade evoengine")
        command.upgrade(config, "head")


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def _adopt_pre_alembic_archive(conn: Connection, config: Config) -> None:
    """Stamp an archive that ``create_all`` made at the first revision; leave an empty
    database alone (the upgrade creates everything)."""
    tables = set(inspect(conn).get_table_names())
    present = tables & FIRST_REVISION_TABLES
    if not present:
        return
    missing = FIRST_REVISION_TABLES - tables
    if missing:
        raise SchemaError(f"the database has some archive tables but not "
                          f"{', '.join(sorted(missing))}; it is not an evoengine archive "
                          "(or a damaged one): point db.url at another database")
    columns = {c["name"] for c in inspect(conn).get_columns("mutation_calls")}
    if "adapter" not in columns:  # made before mutation_calls.adapter existed
        conn.execute(text("ALTER TABLE mutation_calls ADD COLUMN adapter VARCHAR(200)"))
    command.stamp(config, FIRST_REVISION)
