"""A Prefect server of our own (repossessor every second) and settings shared with worker processes."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def limits_api(tmp_path_factory):
    """A real `prefect server start` (SQLite) whose repossessor looks for expired leases every second."""
    from deployments.server import prefect_server

    home = tmp_path_factory.mktemp("limits-prefect")
    saved = os.environ.get("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS")
    os.environ["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"] = "1"
    try:
        with prefect_server(home) as api:
            if saved is None:
                os.environ.pop("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS")
            yield api
    finally:
        if saved is None:
            os.environ.pop("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS", None)
        else:
            os.environ["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"] = saved


@pytest.fixture
def limits_env(tmp_path, limits_api):
    """Build Settings plus the environment that gives a subprocess exactly the same settings."""

    def make(**values):
        from patient_docs.settings import Settings

        values.setdefault("activity_log", tmp_path / "activity.csv")
        values.setdefault("request_timeout", 30.0)
        settings = Settings(**values)
        env = os.environ | {f"PATIENT_DOCS_{key.upper()}": str(value) for key, value in values.items()}
        env["PREFECT_API_URL"] = limits_api
        return settings, env

    return make
