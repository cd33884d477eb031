"""A real PostgreSQL server for tests: its own cluster (``initdb`` into a temporary directory) on
127.0.0.1 and a free port, started and stopped by the test (the "database goes away" tests stop it).

Debian's ``postgresql`` package puts the binaries in ``/usr/lib/postgresql/<version>/bin``; ``tests/full.sh``
installs it. PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, in_ci


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``postgres``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def require_postgres() -> Path:
    """:func:`postgres_bin`, or a skip that says how to install it (a failure in CI, which installs it)."""
    import pytest

    bindir = postgres_bin()
    if bindir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql; tests/full.sh does)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return bindir


class Cluster:
    """One PostgreSQL cluster: ``start()``, ``stop()`` (as an operator's restart or a crash), ``url()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="rewardserve-pg-"))
        self.port = free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._user = "postgres"
        self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "rewardserve", "--no-sync",
                  "-E", "UTF8")
        self.process: subprocess.Popen[bytes] | None = None

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bindir / tool), *args], check=True, capture_output=True, user=self._user,
                       group=self._user)

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        import psycopg

        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
             "-c", "fsync=off"],  # the tests kill the clients and the service, never the machine
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self._user, group=self._user)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self._dsn("postgres"), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"PostgreSQL did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut, as when a database fails over)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown; SIGTERM would wait for every client
            self.process.wait(30)
        self.process = None

    def _dsn(self, db: str) -> str:
        return f"postgresql://rewardserve@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str) -> str:
        """The SQLAlchemy URL of database ``db``."""
        return f"postgresql+psycopg://rewardserve@127.0.0.1:{self.port}/{db}"

    def remove(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
