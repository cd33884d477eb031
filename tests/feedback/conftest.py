"""Fixtures of the feedback tests: a PostgreSQL cluster of their own, and a fresh database per test on
each backend (``store_url`` runs a test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import Cluster, require_postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server on 127.0.0.1 (``tests/full.sh`` installs Debian's postgresql; elsewhere a skip)."""
    cluster = Cluster(require_postgres())
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    """A new, empty PostgreSQL database."""
    return postgres.create_database(f"t{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "feedback.db")
    return str(request.getfixturevalue("pg_url"))
