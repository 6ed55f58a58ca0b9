"""Step 3 on its own: a forgotten job means a new search; an outage past the deadline ends the run."""

from __future__ import annotations

import pytest

from patient_docs import clients
from patient_docs.errors import OutageDeadline, SearchFailed

pytestmark = pytest.mark.usefixtures("clean_faults")


async def started_run(new_patient, settings, job_id: str):
    names = await new_patient(files=1)
    repo = clients.patients(settings)
    await repo.start_run(names.patient_id, run_id=f"run-{names.patient_id}")
    await repo.save_run(names.patient_id, job_id=job_id)
    return names, repo


async def test_unknown_job_is_searched_again(new_patient, settings):
    from tasks.docexchange import wait_for_archive

    names, repo = await started_run(new_patient, settings, "job-the-service-forgot")
    with pytest.raises(SearchFailed, match="unknown"):
        await wait_for_archive.fn(names.patient_id, "job-the-service-forgot")
    assert (await repo.get_run(names.patient_id)).job_id is None  # the next start_search searches anew


async def test_polling_gives_up_after_the_outage_deadline(new_patient, settings, dx, monkeypatch):
    import tasks.docexchange as module

    names, _ = await started_run(new_patient, settings, "some-job")
    short = settings.model_copy(update={"outage_deadline_seconds": 1.0})  # x time_scale: 10 ms
    monkeypatch.setattr(module, "get_settings", lambda: short)
    dx.faults.set_outage("503", 60, path_prefix="/v1/searches")
    with pytest.raises(OutageDeadline, match="deadline"):
        await module.wait_for_archive.fn(names.patient_id, "some-job")
