"""A Prefect server of our own for the priority tests, and a clean per-process slot broker per test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prio_api(tmp_path_factory):
    """A real `prefect server start` (SQLite) shared by this directory's tests and their subprocesses."""
    from deployments.server import prefect_server

    with prefect_server(tmp_path_factory.mktemp("priority-prefect")) as api:
        yield api


@pytest.fixture
def prio_env(tmp_path, prio_api, monkeypatch):
    """Build Settings (applied as Prefect limits) plus the environment giving a subprocess the same settings.

    The test process talks to our server through PREFECT_API_URL for the test's duration; the
    process's broker is reset before (so it is built with these settings) and drained after.
    """
    import asyncio
    import concurrent.futures
    import contextvars

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from patient_docs.limits.broker import reset_broker
    from patient_docs.limits.budgets import apply_limits

    reset_broker()
    monkeypatch.setenv("PREFECT_API_URL", prio_api)
    made = []

    def make(**values):
        from patient_docs.settings import Settings

        values.setdefault("activity_log", tmp_path / "activity.csv")
        values.setdefault("request_timeout", 30.0)
        env = {f"PATIENT_DOCS_{key.upper()}": str(value) for key, value in values.items()}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()

        async def apply() -> None:
            async with get_client() as client:
                await apply_limits(client, settings)

        # In a thread with this context: callable from sync tests and from a running event loop.
        ctx = contextvars.copy_context()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(ctx.run, asyncio.run, apply()).result()
        made.append(settings)
        return settings, dict(os.environ)

    with temporary_settings(updates={PREFECT_API_URL: prio_api}):
        yield make
        reset_broker(wait=True)  # every slot back, so the next test starts with the limit free

