"""Backfill at scale (issue 4): admission width, a 3000-file archive, and `patient-docs backfill --ids-file`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from patient_docs import clients
from patient_docs.activity_log import read_rows
from patient_docs.audit import micros
from patient_docs.pdf import pdf_name
from patient_docs.runner import run_patients

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def rejected(*sims) -> int:
    return sum(b["rejected"] for sim in sims for b in sim.stats()["budgets"].values())


def spans_by_patient(rows, ids: set[str], until: str = "append_report") -> dict[str, tuple[int, int]]:
    """Per patient: read_patient_names start .. `until` finish, in microseconds."""
    start: dict[str, int] = {}
    finish: dict[str, int] = {}
    for row in rows:
        if row.patient_id not in ids:
            continue
        if row.activity == "read_patient_names" and row.event == "start":
            start.setdefault(row.patient_id, micros(row.timestamp))
        elif row.activity == until and row.event == "finish":
            finish[row.patient_id] = micros(row.timestamp)
    return {pid: (start[pid], finish[pid]) for pid in start if pid in finish}


def most_at_once(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])  # a finish sorts before a start
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


async def test_admission_neither_starves_nor_exceeds(new_patient, settings, dx, tt):
    width, files = 4, [0, 1, 2, 3, 0, 5, 1, 2, 0, 4, 3, 1]
    patients = [await new_patient(files=f) for f in files]
    ids = [p.patient_id for p in patients]
    rejected_before = rejected(dx, tt)

    outcomes = await run_patients(ids, priority=0, max_concurrent=width, in_flight=2 * width)

    assert [o.state for o in outcomes] == ["Completed"] * len(ids), [o.message for o in outcomes if not o.ok]
    assert [o.documents for o in outcomes] == files
    assert rejected(dx, tt) == rejected_before

    rows = read_rows(settings.activity_log)
    spans = spans_by_patient(rows, set(ids))
    assert set(spans) == set(ids)
    # Admission is a pipeline: at most `width` patients before or in their transfers, at most
    # `in_flight` in all (the rest convert and report without holding the budget's queue).
    transfer_stage = spans_by_patient(rows, set(ids), until="store_archive")
    at_once = most_at_once(transfer_stage.values())
    assert at_once <= width, f"{at_once} patients in their transfer stage with max_concurrent={width}"
    assert at_once == width, "admission never filled its width: patients were starved"
    assert most_at_once(spans.values()) <= 2 * width

    # Waiting patients are let in when an earlier patient leaves the transfer stage (its archive
    # stored), not when an earlier flow ends: the k-th admission after the first `width` comes
    # before the k-th flow end. Holding places for whole flows would make that never true.
    admissions = sorted(start for start, _ in transfer_stage.values())[width:]
    flow_ends = sorted(finish for _, finish in spans.values())
    early = sum(admitted < ended for admitted, ended in zip(admissions, flow_ends))
    assert early * 2 >= len(admissions), f"only {early} of {len(admissions)} admissions came before a flow ended"


@pytest.mark.postgres
async def test_admission_keeps_the_transfer_budget_busy(new_patient, settings, dx, tt, tmp_path):
    """Twenty patients need 40 transfers on a 10/6s budget, with room for 10 in their transfers: the
    budget binds. Admission keeps a transfer waiting whenever one is sent after the first ten, so the
    40 go as fast as the budget allows (with the broker's pacing of low-priority grants, 0.8 x W/count
    apart, which spreads the first window's ten), and no window carries 11.

    Run by `patient-docs backfill` against a Prefect server on PostgreSQL, as the README says to run
    backfills: on the session's SQLite server each slot write waits ~2 s for the database lock behind
    the flows' own writes, so that server, not admission, would be what the test measured."""
    from db_helpers import pg_database

    from deployments.server import prefect_server
    from patient_docs.audit import _audit_budget, request_intervals
    from patient_docs.settings import Budget

    patients = [await new_patient(files=0) for _ in range(20)]
    ids = sorted(p.patient_id for p in patients)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    rejected_before = rejected(dx, tt)
    budget = Budget(10, 6.0)  # stricter than the simulator's 10/2s, which still rejects any excess

    async with pg_database("patient_docs_prefect") as database_url:
        with prefect_server(tmp_path / "prefect", database_url=database_url) as api:
            env = os.environ | {
                "PREFECT_API_URL": api,
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
                "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": "10/6s",
            }
            proc = subprocess.run(
                [str(BIN / "patient-docs"), "backfill", "--ids-file", str(tmp_path / "ids.txt"), "--max-concurrent", "10"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
            )

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rejected(dx, tt) == rejected_before
    rows = [row for row in read_rows(settings.activity_log) if row.patient_id in set(ids)]
    intervals, _ = request_intervals(rows, settings.request_timeout)
    transfer = _audit_budget("docexchange-search", budget, intervals["docexchange-search"])
    assert transfer.requests == 40
    assert transfer.max_in_window == 10, transfer

    # Work was always waiting: every send after the first ten, until the last ten (when no patient is
    # left to admit), found another transfer ready and unsent.
    ready = {(r.patient_id, "search" if r.activity == "search" else "download"): micros(r.timestamp)
             for r in rows if r.event == "start" and r.activity in ("search", "store_archive")}
    sends = sorted((micros(r.timestamp), ready[(r.patient_id, json.loads(r.arguments)["endpoint"])])
                   for r in rows if r.activity == "request" and r.event == "start"
                   and json.loads(r.arguments)["budget"] == "docexchange-search")
    starved = [k for k, (sent, _) in enumerate(sends[10:-10], 10)
               if not any(ready_at <= sent < other for other, ready_at in sends[k + 1:])]
    assert starved == [], f"sends {starved} found no other transfer waiting"
    # As fast as the budget allows: three more windows after the first, whose ten are paced over 0.8 x 9/10 W.
    span = (sends[-1][0] - sends[0][0]) / 1e6
    ideal = 3 * budget.window + 0.8 * budget.window * 9 / 10
    assert span <= ideal / 0.9, f"40 transfers took {span:.1f} s; the budget allows {ideal:.1f} s"


async def test_a_3000_file_patient_completes_with_bounded_task_runs(new_patient, settings):
    names = await new_patient(files=3000)

    [outcome] = await run_patients([names.patient_id], priority=0, max_concurrent=1)

    assert outcome.ok, outcome.message
    assert outcome.documents == 3000
    store = clients.storage(settings)
    documents = store.list_documents(names.patient_id)
    pdfs = store.list_pdfs(names.patient_id)
    assert (len(documents), len(pdfs)) == (3000, 3000)
    assert sorted(pdfs) == sorted(pdf_name(d) for d in documents)
    report = store.get_report(names.patient_id)
    assert len(report["documents"]) == 3000 and sorted(report["documents"]) == sorted(pdfs)
    status, _ = await clients.patients(settings).get_status(names.patient_id)
    assert status == "DOCUMENTS_FOUND"

    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[outcome.flow_run_id])), limit=200
        )
    assert 0 < len(task_runs) < 30, f"{len(task_runs)} task runs: they must not grow with the file count"


async def test_backfill_ids_file_exits_1_when_one_id_is_invalid(new_patient, settings, tmp_path):
    valid = await new_patient(files=2)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"# two patients\n{valid.patient_id}\nbad id!\n")

    proc = subprocess.run(
        [str(BIN / "patient-docs"), "backfill", "--ids-file", str(ids_file), "--max-concurrent", "100"],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )

    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The test server is on SQLite: asked for 100 at once, the backfill says so and runs narrower.
    assert "stores its state in SQLite" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    status, updated_at = await clients.patients(settings).get_status(valid.patient_id)
    assert status in ("DOCUMENTS_FOUND", "DOCUMENTS_NOT_FOUND") and updated_at is not None
    assert status == "DOCUMENTS_FOUND"


def test_admission_narrows_on_a_sqlite_prefect_server_only(stack, monkeypatch):
    """The session's Prefect server is SQLite: wide admission is narrowed, with a warning naming
    PostgreSQL; on a PostgreSQL server (its connection URL in this environment, or a server this
    process started on PostgreSQL) the widths stand."""
    from patient_docs.runner import SQLITE_IN_FLIGHT, SQLITE_MAX_CONCURRENT, admission_widths

    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    narrow, in_flight, warning = admission_widths(1000, 100, None)
    assert (narrow, in_flight) == (SQLITE_MAX_CONCURRENT, SQLITE_IN_FLIGHT)
    assert "SQLite" in warning and "PostgreSQL" in warning and "1000 patients" in warning
    assert admission_widths(12, 4, 8) == (4, 8, None)  # narrow enough already: no warning

    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect")
    assert admission_widths(1000, 100, None) == (100, 400, None)

    # A server this process started is known by what it was started with, whatever this process's settings.
    from prefect.settings import PREFECT_API_URL

    from deployments.server import STARTED

    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL")
    monkeypatch.setitem(STARTED, PREFECT_API_URL.value(), "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect")
    assert admission_widths(1000, 100, None) == (100, 400, None)
