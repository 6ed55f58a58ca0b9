"""Database helpers for tests that run the project in subprocesses and check its database from here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


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
