"""Walk the operator path for real: server, limits, work pool, `prefect deploy`, worker, deployment run.

Everything runs as it would for an operator: its own `prefect server start` (filesystem lease
storage) in a temporary PREFECT_HOME, the simulators on free ports, the CLI commands of
docs/operations.md as subprocesses from the repository root with prefect.yaml, and a process
worker whose flow-run process imports `flows/patient.py`. The session-wide `stack` fixture is not used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from db_helpers import db_loop

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "patient-docs"  # the work pool named in prefect.yaml
FILES = 3
TIMEOUT = 240.0  # seconds for the deployment run, start of worker included


def _base_env() -> dict[str, str]:
    """This process's environment without any PATIENT_DOCS_* / PREFECT_* the session may have set."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PATIENT_DOCS_", "PREFECT_"))}


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`prefect worker start` in its own process group; the group (flow runs, Dask) is ended on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL], cwd=log.parent, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:  # children of the worker that outlived it (same group)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_for_flow_run(api: str, deployment: str, worker: subprocess.Popen, log: Path):
    """Poll the API until the deployment's flow run is final (or the deadline passes)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        deadline = time.monotonic() + TIMEOUT
        runs = []
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
            if runs and all(r.state and r.state.is_final() for r in runs):
                return runs
            assert worker.poll() is None, f"worker exited {worker.returncode}:\n{log.read_text()[-6000:]}"
            time.sleep(0.5)  # polling the run state with a deadline, not a fixed wait
        pytest.fail(f"flow run not final after {TIMEOUT:.0f} s: {[(r.name, r.state_name) for r in runs]}\n"
                    f"{log.read_text()[-6000:]}")


def _flow_runs_named(api: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))


@pytest.mark.slow
def test_patient_and_backfill_deployments_run_on_a_worker(tmp_path: Path) -> None:
    from deployments.server import prefect_server, server_env
    from patient_docs import clients
    from patient_docs.models import DocumentsStatus, PatientNames
    from patient_docs.settings import Settings
    from patient_docs.simulators.server import run_simulators

    patient_docs_env = {
        "PATIENT_DOCS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'patients.db'}",
        "PATIENT_DOCS_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "PATIENT_DOCS_ACTIVITY_LOG": str(tmp_path / "activity.csv"),
        "PATIENT_DOCS_TIME_SCALE": "0.01",
        "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": "10/2s",
    }
    settings = Settings(**{k.removeprefix("PATIENT_DOCS_").lower(): v for k, v in patient_docs_env.items()})
    tag = uuid.uuid4().hex[:8]
    names = PatientNames(patient_id=f"deploy-{tag}", first_name=f"First{tag}", last_name=f"Last{tag}")

    async def seed(patient: PatientNames) -> None:
        repo = clients.patients(settings)
        await repo.create_schema()
        await repo.upsert_patients([patient])

    async def status(patient_id: str) -> str | None:
        return (await clients.patients(settings).get_status(patient_id))[0]

    home, log = tmp_path / "prefect-home", tmp_path / "worker.log"
    with db_loop(settings) as db, prefect_server(home) as api, run_simulators(settings) as sims:
        sims.docexchange_app.state.sim.set_patient(names.first_name, names.last_name, files=FILES)
        db.run_until_complete(seed(names))
        env = _base_env() | server_env(home) | patient_docs_env | {
            "PATIENT_DOCS_DOCEXCHANGE_URL": sims.docexchange_url,
            "PATIENT_DOCS_TASKTRACKER_URL": sims.tasktracker_url,
            "PREFECT_API_URL": api,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PWD": str(REPO),  # prefect.yaml's working_dir is "{{ $PWD }}": the repository root
        }
        prefect = str(BIN / "prefect")

        _run([str(BIN / "patient-docs"), "limits", "apply"], env)
        _run([prefect, "work-pool", "create", POOL, "--type", "process"], env)
        deployed = _run([prefect, "--no-prompt", "deploy", "--all"], env)
        assert "'patient/patient' successfully created" in deployed.stdout
        assert "'backfill/backfill' successfully created" in deployed.stdout
        schedules = _run([prefect, "deployment", "schedule", "ls", "backfill/backfill"], env).stdout
        assert "0 2 * * *" in schedules and "False" in schedules  # the nightly backfill is off by default

        _run([prefect, "deployment", "run", "patient/patient", "--param", f"patient_id={names.patient_id}"], env)
        with _worker(env, log) as worker:
            (run,) = _wait_for_flow_run(api, "patient/patient", worker, log)
            assert run.state.is_completed(), f"{run.name}: {run.state_name} {run.state.message}\n{log.read_text()[-6000:]}"
            assert run.name == f"patient-{names.patient_id}"
            assert run.parameters == {"patient_id": names.patient_id, "priority": 10}

            assert db.run_until_complete(status(names.patient_id)) == DocumentsStatus.FOUND.value
            tasks = [t for t in sims.tasktracker_app.state.sim.tasks.values() if t.patient_id == names.patient_id]
            assert len(tasks) == 1 and len(tasks[0].reports) == 1
            assert len(tasks[0].reports[0].documents) == FILES
            store = clients.storage(settings)
            assert len(store.list_pdfs(names.patient_id)) == FILES
            assert len(store.list_documents(names.patient_id)) == FILES

            # The backfill deployment picks up the one patient still without a status, as a subflow run.
            later = PatientNames(patient_id=f"deploy-{tag}-b", first_name=f"Second{tag}", last_name=f"Last{tag}")
            sims.docexchange_app.state.sim.set_patient(later.first_name, later.last_name, files=1)
            db.run_until_complete(seed(later))
            _run([prefect, "deployment", "run", "backfill/backfill"], env)
            (backfill,) = _wait_for_flow_run(api, "backfill/backfill", worker, log)
        assert backfill.state.is_completed(), f"{backfill.state_name} {backfill.state.message}\n{log.read_text()[-6000:]}"
        assert backfill.parameters["priority"] == 0
        (child,) = _flow_runs_named(api, f"patient-{later.patient_id}")
        assert child.state.is_completed() and child.parent_task_run_id is not None
        assert db.run_until_complete(status(later.patient_id)) == DocumentsStatus.FOUND.value
        assert len(clients.storage(settings).list_pdfs(later.patient_id)) == 1
