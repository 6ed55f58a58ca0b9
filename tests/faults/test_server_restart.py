"""A Prefect server restart neither loses nor leaks the limits' leased slots (docs/outages.md).

Each test runs its own `prefect server start` (deployments/server.py: filesystem lease storage,
SQLite under a temporary PREFECT_HOME) on a fixed port, stops it and starts it again on the same
port and home. The session-wide `stack` fixture (Prefect's in-process test harness) is not used.
"""

from __future__ import annotations

import time

import pytest

from restart_helpers import (
    MEMORY,
    acquire,
    active_slots,
    apply_limits,
    release,
    restartable_server,
    wait_until,
)

N = 3  # slots held across the restart
LEASE = 60  # seconds: Prefect's minimum lease duration
REPOSSESS_FAST = {"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1"}


@pytest.fixture
def settings():
    from patient_docs.settings import Settings

    return Settings()


def _transfer():
    from patient_docs.limits.budgets import TRANSFER

    return TRANSFER


def test_held_leases_survive_a_restart_and_release_by_id(tmp_path, settings):
    name = _transfer()
    with restartable_server(tmp_path / "prefect") as server:
        apply_limits(server.api, settings)
        leases = acquire(server.api, name, N, LEASE)
        assert active_slots(server.api, [name]) == {name: N}

        server.restart()
        assert active_slots(server.api, [name]) == {name: N}, "held slots lost by the restart"
        release(server.api, leases)
        assert active_slots(server.api, [name]) == {name: 0}, server.log()
        # Slots are usable again at once.
        release(server.api, acquire(server.api, name, settings.docexchange_transfer_limit.count, LEASE))
        assert active_slots(server.api, [name]) == {name: 0}


def test_memory_lease_storage_leaves_slots_taken_after_a_restart(tmp_path, settings):
    """Why the setting matters: with Prefect's default, a restart forgets the leases, not the slots."""
    name = _transfer()
    with restartable_server(tmp_path / "prefect", lease_storage=MEMORY) as server:
        apply_limits(server.api, settings)
        leases = acquire(server.api, name, N, LEASE)
        server.restart()
        assert active_slots(server.api, [name]) == {name: N}
        release(server.api, leases)  # the server no longer knows these leases: a silent no-op
        assert active_slots(server.api, [name]) == {name: N}, "memory leases now survive? update docs/outages.md"


@pytest.mark.slow
def test_unreleased_slots_come_back_by_lease_expiry_after_a_restart(tmp_path, settings):
    """A holder that dies with the server never releases: expiry frees its slots, but only on disk.

    Both servers run side by side (one 60 s wait for both): filesystem lease storage (ours) gets the
    slots back, the memory contrast keeps them taken well after the leases would have expired.
    """
    name = _transfer()
    with restartable_server(tmp_path / "fs", env=REPOSSESS_FAST) as fs, \
            restartable_server(tmp_path / "mem", env=REPOSSESS_FAST, lease_storage=MEMORY) as mem:
        for server in (fs, mem):
            apply_limits(server.api, settings)
        acquired = time.monotonic()
        for server in (fs, mem):
            acquire(server.api, name, N, LEASE)
        for server in (fs, mem):
            server.restart()
            assert active_slots(server.api, [name]) == {name: N}

        wait_until(lambda: active_slots(fs.api, [name]) == {name: 0}, LEASE + 45,
                   f"expired leases repossessed after the restart\n{fs.log()}")
        assert time.monotonic() - acquired >= LEASE - 1, "slots came back before their leases expired"
        time.sleep(max(0.0, acquired + LEASE + 5 - time.monotonic()))  # past expiry + 5 repossessor loops
        assert active_slots(mem.api, [name]) == {name: N}, "memory storage: slots expected to stay taken"


# --- Restart mid-backfill (end to end) -----------------------------------------------------------

PATIENTS = 6
BACKFILL_TIMEOUT = 300.0
# Down until a request failing to connect has been retried with back-off (2 s, then 4 s): a ~6 s
# outage, longer than the restart itself. Prefect's client gives up after PREFECT_CLIENT_MAX_RETRIES
# (default 5, back-off 2+4+8+16+32 s: ~62 s in all); see docs/outages.md.
RETRIED_TWICE = 3


def test_backfill_survives_a_prefect_server_restart(tmp_path):
    """`patient-docs backfill` in a subprocess; the Prefect server is stopped and restarted mid-run."""
    import subprocess
    import uuid

    from db_helpers import db_loop
    from restart_helpers import (
        BIN,
        RestartableServer,
        backfill_env,
        kill_group,
        patient_statuses,
        connect_retries,
        seed_patients,
    )

    from patient_docs.limits.budgets import LIMITS
    from patient_docs.limits.priority import marker_name
    from patient_docs.models import PatientNames
    from patient_docs.settings import Settings
    from patient_docs.simulators.server import run_simulators

    pd_env = {
        "PATIENT_DOCS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'patients.db'}",
        "PATIENT_DOCS_STORAGE_URL": (tmp_path / "storage").as_uri(),
        "PATIENT_DOCS_ACTIVITY_LOG": str(tmp_path / "activity.csv"),
        "PATIENT_DOCS_TIME_SCALE": "0.01",
        "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": "5/2s",
        "PATIENT_DOCS_SIM_JOB_SECONDS": "20",
        "PATIENT_DOCS_POLL_INITIAL_SECONDS": "10",
        "PATIENT_DOCS_REQUEST_TIMEOUT": "10",
        "PATIENT_DOCS_WORKER_THREADS": "4",
        "PATIENT_DOCS_LOG_PATIENT_NAMES": "false",
    }
    settings = Settings(**{k.removeprefix("PATIENT_DOCS_").lower(): v for k, v in pd_env.items()})
    tag = uuid.uuid4().hex[:8]
    patients = [PatientNames(patient_id=f"rs-{tag}-{i}", first_name=f"First{tag}{i}", last_name=f"Last{tag}{i}")
                for i in range(PATIENTS)]
    ids = [p.patient_id for p in patients]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "backfill.log"

    server = RestartableServer(tmp_path / "prefect", env=REPOSSESS_FAST)
    server.start()
    proc = None
    try:
        with db_loop(settings) as db, run_simulators(settings) as sims:
            dx, tt = sims.docexchange_app.state.sim, sims.tasktracker_app.state.sim
            for p in patients:
                dx.set_patient(p.first_name, p.last_name, files=2)
            db.run_until_complete(seed_patients(settings, patients))
            env = backfill_env(tmp_path, pd_env | {
                "PATIENT_DOCS_DOCEXCHANGE_URL": sims.docexchange_url,
                "PATIENT_DOCS_TASKTRACKER_URL": sims.tasktracker_url,
                "PREFECT_API_URL": server.api,
            })
            with out.open("wb") as log:
                proc = subprocess.Popen([str(BIN / "patient-docs"), "backfill", "--ids-file", str(ids_file)],
                                        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

            def tail() -> str:
                return out.read_text(errors="replace")[-8000:]

            # Mid-run: requests have been sent, and not every patient is finished.
            def mid_run():
                assert proc.poll() is None, f"backfill exited {proc.returncode} before the restart\n{tail()}"
                sent = requests_sent(settings)
                done = sum(s is not None for s in db.run_until_complete(patient_statuses(settings, ids)).values())
                return sent >= 2 and done < PATIENTS

            wait_until(mid_run, 120, "some requests sent while patients are still running", interval=0.05)
            before = connect_retries(out, RETRIED_TWICE)
            server.stop()
            # The backfill notices: its Prefect client retries (bounded wait on its own log lines).
            wait_until(lambda: connect_retries(out, RETRIED_TWICE) > before, 60,
                       f"backfill retrying the Prefect API with back-off\n{tail()}")
            assert proc.poll() is None, f"backfill gave up while the server was down\n{tail()}"
            server.start()

            rc = proc.wait(BACKFILL_TIMEOUT)
            assert rc == 0, f"backfill exited {rc} after the restart\n{tail()}"

            statuses = db.run_until_complete(patient_statuses(settings, ids))
            assert all(statuses[i] is not None for i in ids), statuses
            for pid in ids:
                entries = [t for t in tt.tasks.values() if t.patient_id == pid]
                assert len(entries) == 1, (pid, len(entries))
            for sim in (dx, tt):
                budgets = sim.stats()["budgets"]
                assert all(b["rejected"] == 0 for b in budgets.values()), budgets
        names = [*LIMITS, *map(marker_name, LIMITS)]
        wait_until(lambda: set(active_slots(server.api, names).values()) == {0}, LEASE + 60,
                   f"limits back to 0 active slots: {active_slots(server.api, names)}\n{server.log()}")
    finally:
        if proc is not None:
            kill_group(proc)
        server.stop()


def requests_sent(settings) -> int:
    from patient_docs.activity_log import read_rows

    return sum(r.activity == "request" for r in read_rows(settings.activity_log))
