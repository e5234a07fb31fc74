"""One controller per run: a lock held while `evo run` or `evo resume` drives a run.

Two controllers on one run would each keep their own archive in memory and number
their steps from the same point, and the second would overwrite the stored config of
the first. The lock lives where the run does:

* SQLite: an exclusive ``flock`` on ``<database>-run<ID>.lock`` beside the database
  file (the file stays; the lock goes with the process, however it ends);
* PostgreSQL: a session-level advisory lock on (``_PG_NAMESPACE``, run id), held by a
  connection of its own, so that controllers on different machines exclude each other.

A run whose controller was killed is free at once: both kinds are released by the
kernel or the server when the process or its connection goes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select

from evoengine.archive.store import StoreError

_PG_NAMESPACE = 0x65766F  # "evo": keeps our advisory locks apart from other users'


class RunLock:
    """Held from ``acquire`` to ``release`` (or the end of the process)."""

    def __init__(self, fd: int | None = None, connection: Connection | None = None,
                 run_id: int = 0) -> None:
        self._fd = fd
        self._connection = connection
        self._run_id = run_id

    @classmethod
    def acquire(cls, engine: Engine, run_id: int, run_name: str) -> RunLock:
        """Take the run's lock; StoreError if another process holds it."""
        busy = (f"run {run_name!r} is being driven by another `evo` process; wait for it "
                "to finish (or stop it with Ctrl-C), then resume")
        if engine.dialect.name == "postgresql":
            connection = engine.connect()
            taken = connection.execute(select(func.pg_try_advisory_lock(
                _PG_NAMESPACE, run_id))).scalar()
            if not taken:
                connection.close()
                raise StoreError(busy)
            connection.commit()  # end the implicit transaction; the lock is the session's
            return cls(connection=connection, run_id=run_id)
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return cls()  # nothing another process could open
        path = Path(f"{database}-run{run_id}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot make the lock file {path} of run {run_name!r} "
                             f"({exc.strerror}); its folder must be writable") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(busy) from None
        return cls(fd=fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None
        if self._connection is not None:  # (a pooled connection outlives close())
            self._connection.execute(select(func.pg_advisory_unlock(_PG_NAMESPACE,
                                                                    self._run_id)))
            self._connection.commit()
            self._connection.close()
            self._connection = None
