"""A run that died half-way is resumed from its checkpoints: no second search, download or entry."""

from __future__ import annotations

import uuid

import pytest

from fault_helpers import DOWNLOAD, SEARCH, assert_completed, entries_for, requests, run_flow
from patient_docs import clients

pytestmark = pytest.mark.usefixtures("clean_faults")


@pytest.mark.parametrize("crash_after", ["store_archive", "create_entry"])
async def test_resume_after_crash(new_patient, settings, dx, tt, crash_after):
    """docs/outages.md: steps 1-4 (or 1-5) done by a run that then died; the next run completes the rest."""
    from tasks.docexchange import start_search, store_archive, wait_for_archive
    from tasks.tasktracker import create_entry

    names = await new_patient(files=3)
    pid = names.patient_id
    repo = clients.patients(settings)
    # What the dead run did: its run row, a search, the archive stored (and maybe the entry).
    await repo.start_run(pid, run_id=str(uuid.uuid4()))
    job_id = await start_search.fn(names)
    url = await wait_for_archive.fn(pid, job_id)
    stored = await store_archive.fn(pid, url)
    assert len(stored) == 3
    if crash_after == "create_entry":
        await create_entry.fn(names)
        assert len(entries_for(tt, pid)) == 1
    before = (requests(dx, SEARCH), requests(dx, DOWNLOAD))

    state = await run_flow(pid)

    await assert_completed(state, names, 3, settings, dx, tt)  # includes: exactly one entry
    assert (requests(dx, SEARCH), requests(dx, DOWNLOAD)) == before  # no second search, no second download


async def test_finished_run_starts_afresh(new_patient, settings, dx, tt):
    """A finished run is not resumed: running the patient again searches again and replaces its files."""
    names = await new_patient(files=2)
    await assert_completed(await run_flow(names.patient_id), names, 2, settings, dx, tt)
    searches = requests(dx, SEARCH)
    state = await run_flow(names.patient_id)
    assert state.is_completed(), state.message
    assert requests(dx, SEARCH) - searches == 1
    assert len(clients.storage(settings).list_documents(names.patient_id)) == 2
    # a new run, a new run id: a second entry (one per run), each with one report
    entries = entries_for(tt, names.patient_id)
    assert len(entries) == 2 and all(len(e.reports) == 1 for e in entries)


async def test_resume_after_kill_9_of_a_real_run(new_patient, settings, dx, tt):
    """docs/outages.md: `patient-docs run` SIGKILLed right after step 4; the next run completes the rest.

    Deterministic: TaskTracker is down, so the killed process cannot get past step 5 before the kill.
    """
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    names = await new_patient(files=3)
    pid = names.patient_id
    repo = clients.patients(settings)
    before = (requests(dx, SEARCH), requests(dx, DOWNLOAD))
    tt.faults.set_outage("503", 600)
    cli = Path(sys.executable).parent / "patient-docs"
    proc = subprocess.Popen([str(cli), "run", pid], env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while loop.time() < deadline and proc.poll() is None:
            run = await repo.get_run(pid)
            if run is not None and run.archive_stored:
                break
            await asyncio.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        tt.faults.clear()
    run = await repo.get_run(pid)
    assert run.archive_stored and not run.finished and run.task_id is None
    after_kill = (requests(dx, SEARCH), requests(dx, DOWNLOAD))
    assert (after_kill[0] - before[0], after_kill[1] - before[1]) == (1, 1)

    state = await run_flow(pid)

    await assert_completed(state, names, 3, settings, dx, tt)  # one entry, one report
    assert (requests(dx, SEARCH), requests(dx, DOWNLOAD)) == after_kill
