"""The composition root: every client is built here, from the settings, and nowhere else."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from patient_docs.clients.docexchange import DocExchangeClient
from patient_docs.clients.patients import PatientsRepo, make_engine
from patient_docs.clients.storage import DocumentStore
from patient_docs.clients.tasktracker import TaskTrackerClient
from patient_docs.settings import Settings

_engines: dict[tuple[str, int], object] = {}


@functools.cache
def _tls() -> ssl.SSLContext:
    # Built once: loading the CA bundle took 28 % of the orchestrator's CPU in a backfill when
    # every request step built its own.
    return httpx.create_ssl_context()


def _http(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.request_timeout),
        verify=_tls(),
        # Redirects could carry an archive download to another host: never follow them.
        follow_redirects=False,
    )


@asynccontextmanager
async def docexchange(settings: Settings) -> AsyncIterator[DocExchangeClient]:
    async with _http(settings) as http:
        yield DocExchangeClient(http, settings.docexchange_url)


@asynccontextmanager
async def tasktracker(settings: Settings) -> AsyncIterator[TaskTrackerClient]:
    async with _http(settings) as http:
        yield TaskTrackerClient(http, settings.tasktracker_url)


def patients(settings: Settings) -> PatientsRepo:
    """A repository on an engine shared per URL and event loop (async drivers are loop-bound)."""
    key = (settings.database_url, id(asyncio.get_running_loop()))
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(settings.database_url)
    return PatientsRepo(engine)


def storage(settings: Settings) -> DocumentStore:
    return DocumentStore(settings.storage_url)
