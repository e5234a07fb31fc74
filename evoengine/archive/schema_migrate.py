"""Create and migrate the archive schema, every time a store opens.

The revisions live in ``evoengine/archive/migrations`` (shipped inside the package),
so an installed ``evo`` can bring any archive it meets up to date: an older archive
gets the revisions it lacks. An archive made before Alembic took over (its tables
made by ``Base.metadata.create_all``, no ``alembic_version`` table) is adopted:
stamped at the first revision (after adding ``mutation_calls.adapter`` if it predates
that column), never recreated.

The two common cases never import Alembic (about 0.1 s of every ``evo`` start): an
archive already at :data:`HEAD_REVISION` is left as it is, and a database with no
archive tables gets the models' tables (``create_all``) stamped at the head, as
Alembic's cookbook builds a new database. ``tests/test_alembic_migrations.py`` holds
both to the revisions: the constant is the scripts' head, and a database built by
running every revision has the same schema as one built this way.

Several processes may open one PostgreSQL archive at once (a controller per run, a
browser): the whole check-and-upgrade runs in one transaction under a
transaction-scoped advisory lock, so exactly one of them migrates and the others see
the finished schema.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
    text,
)

from evoengine.archive.models import Base
from evoengine.errors import UserError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
FIRST_REVISION = "0001_initial"
# The newest revision in MIGRATIONS_DIR (a test checks it against the scripts' head):
# a new revision must update it.
HEAD_REVISION = "0001_initial"
# The tables of FIRST_REVISION: an archive without alembic_version that has them is
# adopted at it.
FIRST_REVISION_TABLES = frozenset({"runs", "programs", "evaluations", "mutation_calls",
                                   "llm_calls"})
# pg_advisory_xact_lock key: any constant shared by every evoengine process.
_ADVISORY_LOCK_KEY = 0x65766F5F61726368 & 0x7FFFFFFFFFFFFFFF  # "evo_arch"
# Alembic's version table, as Alembic itself creates it.
_VERSION_TABLE = Table("alembic_version", MetaData(),
                       Column("version_num", String(32), nullable=False),
                       PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


class SchemaError(UserError):
    """The database holds something evoengine cannot migrate; the message says what."""


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection`` (or, for
    the ``alembic`` command line when authoring a revision, to ``url``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The head of the packaged revision scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the packaged migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the database at ``engine`` to the newest schema (a no-op when it is)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": _ADVISORY_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        if _VERSION_TABLE.name in tables:
            stored = conn.execute(select(_VERSION_TABLE.c.version_num)).scalars().all()
            if stored == [HEAD_REVISION]:
                return
        elif not tables & set(Base.metadata.tables):  # a new database
            Base.metadata.create_all(conn)
            _VERSION_TABLE.create(conn)
            conn.execute(_VERSION_TABLE.insert().values(version_num=HEAD_REVISION))
            return
        _migrate_with_alembic(conn)


def _migrate_with_alembic(conn: Connection) -> None:
    """Adopt a pre-Alembic archive, refuse one from a newer evoengine, and run the
    revisions an older archive lacks."""
    from alembic import command

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
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def _adopt_pre_alembic_archive(conn: Connection, config: Config) -> None:
    """Stamp an archive that ``create_all`` made at the first revision; leave an empty
    database alone (the upgrade creates everything)."""
    from alembic import command

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
