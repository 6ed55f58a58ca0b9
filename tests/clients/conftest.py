"""Database fixtures for the client tests: a SQLite file per test, a PostgreSQL database per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from patient_docs.clients.patients import PatientsRepo, make_engine

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", database="postgres")


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A uniquely named PostgreSQL database for this session, dropped afterwards; skips if unreachable."""
    try:
        import asyncpg

        admin = await asyncpg.connect(**PG_ADMIN, timeout=5)
    except Exception as exc:  # any failure to connect means: no server to test against
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc!r}")
    name = f"patient_docs_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


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
