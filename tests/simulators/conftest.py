"""Fixtures for the simulator tests: fast settings, a fake clock and in-process clients (no Prefect stack)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from patient_docs.settings import Settings
from patient_docs.simulators.docexchange import create_docexchange_app
from patient_docs.simulators.tasktracker import create_tasktracker_app


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_settings(**overrides: object) -> Settings:
    """Settings with tiny simulated durations so every test runs in milliseconds."""
    values: dict[str, object] = {
        "sim_job_seconds": 10.0,
        "sim_download_seconds": 0.0,
        "sim_latency_min": 0.0,
        "sim_latency_max": 0.002,
        "sim_max_files": 3000,
        "time_scale": 1.0,
        "request_timeout": 5.0,
        "docexchange_transfer_limit": "10/60s",
        "docexchange_poll_limit": "10/1s",
        "tasktracker_limit": "10/1s",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build fast settings with overrides."""
    return fast_settings


@pytest.fixture
def sim_settings() -> Settings:
    return fast_settings()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def unique() -> str:
    """A fresh suffix so names and keys never collide between tests."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def de_app(sim_settings: Settings, clock: FakeClock) -> FastAPI:
    return create_docexchange_app(sim_settings, clock=clock, seed=1)


@pytest.fixture
def tt_app(sim_settings: Settings, clock: FakeClock) -> FastAPI:
    return create_tasktracker_app(sim_settings, clock=clock, seed=2)


@pytest.fixture
async def de_client(de_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=de_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docexchange.test") as client:
        yield client


@pytest.fixture
async def tt_client(tt_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tt_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tasktracker.test") as client:
        yield client
