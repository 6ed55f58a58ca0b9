"""Database helpers for tests that run the project in subprocesses and check its database from here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", database="postgres")


@asynccontextmanager
async def pg_database(prefix: str) -> AsyncIterator[str]:
    """A uniquely named PostgreSQL database, dropped afterwards; skips the test if PostgreSQL is unreachable."""
    try:
        import asyncpg

        admin = await asyncpg.connect(**PG_ADMIN, timeout=5)
    except Exception as exc:  # any failure to connect means: no server to test against
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc!r}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextmanager
def db_loop(settings) -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for every database call of the test (the repository's engines are cached per loop)."""
    from patient_docs import clients

    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        async def dispose() -> None:
            await clients.patients(settings).engine.dispose()

        loop.run_until_complete(dispose())
        loop.close()
