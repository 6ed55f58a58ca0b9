"""Outages of the services: the patient still completes, once, within the limits."""

from __future__ import annotations

import pytest

from fault_helpers import DOWNLOAD, POLL, SEARCH, assert_completed, requests, run_flow, run_flow_during_outage

pytestmark = pytest.mark.usefixtures("clean_faults")


@pytest.mark.parametrize("retry_after", [None, 1])
async def test_docexchange_503_during_search(new_patient, settings, dx, tt, retry_after):
    """docs/outages.md: 503 (with or without Retry-After) on the search -> task retries -> completes."""
    names = await new_patient(files=2)
    faulted, searches = dx.faults.faulted, requests(dx, SEARCH)
    # The search endpoint is down (polls share the prefix; polling rides out outages on its own)
    # until three requests have been refused.
    dx.faults.set_outage("503", 60, path_prefix="/v1/searches", retry_after=retry_after)
    state = await run_flow_during_outage(dx, names.patient_id, hits=3)
    await assert_completed(state, names, 2, settings, dx, tt)
    assert dx.faults.faulted - faulted == 3  # the outage really hit the search
    # the refused attempts never reached the service's logic; exactly one search job was created
    assert requests(dx, SEARCH) - searches == 4
    assert sum(1 for j in dx.jobs.values() if j.archive_id in dx.archives and
               dx.archives[j.archive_id].seed == f"{names.first_name}\0{names.last_name}") == 1


async def test_tasktracker_random_503(new_patient, settings, dx, tt):
    """docs/outages.md: random 503s on TaskTracker -> retries with the same Idempotency-Key -> one entry, one report."""
    names = await new_patient(files=1)
    faulted = tt.faults.faulted
    tt.faults.set_random_503(0.3)
    try:
        state = await run_flow(names.patient_id)
    finally:
        tt.faults.clear()
    await assert_completed(state, names, 1, settings, dx, tt)
    assert tt.faults.faulted >= faulted  # (random: may or may not have hit this run)


async def test_idempotency_key_replays_the_first_entry(new_patient, settings, tt):
    """A create or report whose response was lost and is sent again (same key) writes nothing new."""
    from patient_docs import clients
    from patient_docs.models import Report

    names = await new_patient()
    async with clients.tasktracker(settings) as client:
        first = await client.create_task(names.patient_id, names.first_name, names.last_name, idempotency_key="run-x:create")
        again = await client.create_task(names.patient_id, names.first_name, names.last_name, idempotency_key="run-x:create")
        report = Report(title="t", documents=[], body="0 document(s)")
        await client.append_report(first.task_id, report, idempotency_key="run-x:report")
        await client.append_report(first.task_id, report, idempotency_key="run-x:report")
    assert again.task_id == first.task_id
    [entry] = [t for t in tt.tasks.values() if t.patient_id == names.patient_id]
    assert len(entry.reports) == 1


async def test_dropped_connections_while_polling(new_patient, settings, dx, tt):
    """docs/outages.md: dropped status polls only lengthen the wait; no second search."""
    names = await new_patient(files=2)
    faulted, searches, downloads = dx.faults.faulted, requests(dx, SEARCH), requests(dx, DOWNLOAD)
    polls = requests(dx, POLL)
    dx.faults.set_outage("drop", 60, path_prefix="/v1/searches/")
    state = await run_flow_during_outage(dx, names.patient_id, hits=3)
    await assert_completed(state, names, 2, settings, dx, tt)
    assert dx.faults.faulted - faulted == 3 and requests(dx, POLL) - polls >= 4
    assert (requests(dx, SEARCH) - searches, requests(dx, DOWNLOAD) - downloads) == (1, 1)


async def test_failed_search_job_is_searched_again(new_patient, settings, dx, tt):
    """docs/outages.md: a job that ends "failed" -> a new search -> completes."""
    names = await new_patient(files=3, fail_jobs=1)
    searches, downloads = requests(dx, SEARCH), requests(dx, DOWNLOAD)
    state = await run_flow(names.patient_id)
    await assert_completed(state, names, 3, settings, dx, tt)
    assert (requests(dx, SEARCH) - searches, requests(dx, DOWNLOAD) - downloads) == (2, 1)
