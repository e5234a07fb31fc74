"""A throwaway PostgreSQL server for the tests: a real ``postgres`` on 127.0.0.1 with
its data directory in a temporary folder, stopped and deleted at the end.

The binaries come from ``$PATH`` (``initdb``, ``pg_ctl``, ``postgres``) or from
Debian's ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, so
as root the server runs as ``nobody``, which owns the data directory. Authentication
is ``trust`` for the one role ``evo``: nothing but loopback can reach it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

ROLE = "evo"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (``.ci/run`` installs Debian's)."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in "
                              "/usr/lib/postgresql/*/bin; apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``start()`` it, make databases with ``create_database``, then ``stop()``."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="evo-pg-"))
        self.data_dir = self.root / "data"
        self.port = _free_port()
        self._user: str | None = "nobody" if os.geteuid() == 0 else None
        self._databases = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run([str(self.bin_dir / args[0]), *args[1:]], env=env,
                              cwd=self.root, user=self._user, capture_output=True, text=True,
                              timeout=120, check=False)

    def start(self) -> PostgresServer:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        done = self._run("initdb", "-D", str(self.data_dir), "-U", ROLE, "--auth=trust",
                         "--no-locale", "-E", "UTF8", "--no-sync")
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c max_connections=200")
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "log"),
                         "-o", options, "-w", "-t", "60", "start")
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise PostgresUnavailable(f"postgres did not start: {done.stderr.strip()} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "evo") -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
