"""One Prefect test server, one pair of simulators and one Dask cluster for the whole session."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

import pytest

# Settings for the whole session, set before any project module reads them (Dask workers inherit these).
_TMP = Path(tempfile.mkdtemp(prefix="patient-docs-tests-"))
TEST_ENV = {
    "PATIENT_DOCS_DATABASE_URL": f"sqlite+aiosqlite:///{_TMP / 'patients.db'}",
    "PATIENT_DOCS_STORAGE_URL": (_TMP / "storage").as_uri(),
    "PATIENT_DOCS_ACTIVITY_LOG": str(_TMP / "activity.csv"),
    "PATIENT_DOCS_TIME_SCALE": "0.01",
    "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": "10/2s",
    "PATIENT_DOCS_SIM_JOB_SECONDS": "20",
    "PATIENT_DOCS_POLL_INITIAL_SECONDS": "10",
    "PATIENT_DOCS_REQUEST_TIMEOUT": "10",
    "PATIENT_DOCS_WORKER_THREADS": "8",
    "PATIENT_DOCS_LOG_PATIENT_NAMES": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
os.environ.update(TEST_ENV)
os.environ.pop("PATIENT_DOCS_DASK_ADDRESS", None)


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def stack(tmp_root):
    """Simulators on loopback ports, a Prefect test server, a Dask cluster, limits applied."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from patient_docs.limits.broker import reset_broker
    from patient_docs.runner import environment, prepare
    from patient_docs.settings import get_settings
    from patient_docs.simulators.server import run_simulators

    get_settings.cache_clear()
    with run_simulators(get_settings()) as sims:
        os.environ["PATIENT_DOCS_DOCEXCHANGE_URL"] = sims.docexchange_url
        os.environ["PATIENT_DOCS_TASKTRACKER_URL"] = sims.tasktracker_url
        get_settings.cache_clear()
        with prefect_test_harness(server_startup_timeout=60):
            os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
            with environment() as settings:
                asyncio.run(prepare(settings))
                yield sims
            reset_broker()
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def dx(stack):
    """The DocumentExchange simulator's state (set patients, faults, read stats)."""
    return stack.docexchange_app.state.sim


@pytest.fixture
def tt(stack):
    """The TaskTracker simulator's state (tasks, faults, stats)."""
    return stack.tasktracker_app.state.sim


@pytest.fixture
def settings(stack):
    from patient_docs.settings import get_settings

    return get_settings()


@pytest.fixture
def new_patient(settings, dx):
    """Insert a patient with unique names; `files=` decides what DocumentExchange will find."""
    from patient_docs import clients
    from patient_docs.models import PatientNames

    async def make(files: int = 0, **profile) -> PatientNames:
        tag = uuid.uuid4().hex[:10]
        names = PatientNames(patient_id=f"p-{tag}", first_name=f"First{tag}", last_name=f"Last{tag}")
        dx.set_patient(names.first_name, names.last_name, files=files, **profile)

        await clients.patients(settings).upsert_patients([names])
        return names

    return make
