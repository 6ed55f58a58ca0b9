"""Helpers of the fault tests (imported by the test modules)."""

from __future__ import annotations

import json

from patient_docs import clients
from patient_docs.pdf import pdf_name


async def run_flow(patient_id: str):
    from flows.patient import patient_flow

    return await patient_flow(patient_id=patient_id, return_state=True)


def entries_for(tt, patient_id: str):
    return [t for t in tt.tasks.values() if t.patient_id == patient_id]


def no_limit_violations(dx, tt) -> None:
    """Neither simulator ever answered 429: our limits held, retries included."""
    for sim in (dx, tt):
        budgets = sim.stats()["budgets"]
        assert all(b["rejected"] == 0 for b in budgets.values()), json.dumps(budgets)


def requests(sim, label: str) -> int:
    return sim.stats()["requests"].get(label, 0)


SEARCH, POLL, DOWNLOAD = "POST /v1/searches", "GET /v1/searches/{job_id}", "GET /v1/archives/{archive_id}"


async def assert_completed(state, names, files: int, settings, dx, tt) -> None:
    """Database, storage and TaskTracker all show one complete run for the patient."""
    assert state.is_completed(), state.message
    pid = names.patient_id
    expected = "DOCUMENTS_FOUND" if files else "DOCUMENTS_NOT_FOUND"
    status, updated_at = await clients.patients(settings).get_status(pid)
    assert status == expected and updated_at is not None
    run = await clients.patients(settings).get_run(pid)
    assert run is not None and run.finished
    store = clients.storage(settings)
    documents = store.list_documents(pid)
    assert len(documents) == files
    assert sorted(store.list_pdfs(pid)) == sorted(pdf_name(d) for d in documents)
    report = store.get_report(pid)
    [entry] = entries_for(tt, pid)  # exactly one entry
    assert entry.status == expected and entry.task_id == run.task_id
    assert len(entry.reports) == 1 and entry.reports[0].documents == report["documents"]
    no_limit_violations(dx, tt)


async def end_outage_after_hits(sim, hits: int, timeout: float = 60.0) -> None:
    """Let an outage (set long) fail `hits` requests, then end it: deterministic whatever the start-up time."""
    import asyncio

    target = sim.faults.faulted + hits
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sim.faults.faulted < target and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sim.faults.clear()


async def run_flow_during_outage(sim, patient_id: str, hits: int):
    """Run the flow while the outage set on `sim` fails `hits` requests."""
    import asyncio

    ender = asyncio.create_task(end_outage_after_hits(sim, hits))
    try:
        return await run_flow(patient_id)
    finally:
        await ender
