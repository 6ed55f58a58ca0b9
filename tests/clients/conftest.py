"""Database fixtures for the client tests: a SQLite file per test, a PostgreSQL database per session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from db_helpers import pg_database as make_pg_database

from patient_docs.clients.patients import PatientsRepo, make_engine


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database for this session's client tests; skips if PostgreSQL is unreachable."""
    async with make_pg_database("patient_docs_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database URL: a fresh SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'patients.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[PatientsRepo]:
    """A repository with its schema created, on each database."""
    engine = make_engine(db_url)
    repo = PatientsRepo(engine)
    await repo.create_schema()
    yield repo
    await engine.dispose()
