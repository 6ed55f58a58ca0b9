"""Scale-out (issue 4): an external `dask scheduler` and two `dask worker --resources` processes.

The cluster is started with the commands of docs/operations.md (`patient_docs.cluster.dask_processes`);
the flows find it through PATIENT_DOCS_DASK_ADDRESS, as a Prefect worker on another machine would.
"""

from __future__ import annotations

import os
from collections import defaultdict

from distributed import Client

from patient_docs.cluster import dask_processes
from patient_docs.runner import run_patients
from patient_docs.settings import get_settings


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(stop, -1) for _, stop in spans])  # stop before start
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


async def test_two_workers_share_the_conversions_within_their_resources(new_patient, settings, tmp_path):
    """Three patients (60 files) at once on two workers declaring CPU=8, MEMORY=12e9: every patient
    completes with all its PDFs, both workers convert, and no worker ever runs more than 8 conversions
    at once (each asks for CPU=1, MEMORY=1e9), though 60 were queued and each worker has 16 threads:
    the declared resources, not the thread count, are what cap a worker."""
    files = [30, 18, 12]
    patients = [await new_patient(files=n) for n in files]
    saved = os.environ["PATIENT_DOCS_DASK_ADDRESS"]
    with dask_processes(2, settings, directory=tmp_path, nthreads=16) as address:
        os.environ["PATIENT_DOCS_DASK_ADDRESS"] = address
        os.environ["PATIENT_DOCS_CONVERSION_BATCH_SECONDS"] = "0"  # one file per Dask task: 60 tasks queued
        get_settings.cache_clear()
        try:
            async with Client(address, asynchronous=True, set_as_default=False) as client:
                workers = (await client.scheduler.identity())["workers"]
                assert sorted(w["resources"]["CPU"] for w in workers.values()) == [8, 8]
                await client.get_task_stream()  # starts recording on the scheduler
                outcomes = await run_patients([p.patient_id for p in patients], priority=0, max_concurrent=3)
                stream = await client.get_task_stream()
        finally:
            os.environ["PATIENT_DOCS_DASK_ADDRESS"] = saved
            os.environ.pop("PATIENT_DOCS_CONVERSION_BATCH_SECONDS")
            get_settings.cache_clear()

    assert [o.state for o in outcomes] == ["Completed"] * 3, [o.message for o in outcomes]
    assert [o.documents for o in outcomes] == files
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in stream:
        if "convert_files" in str(record["key"]):
            for part in record["startstops"]:
                if part["action"] == "compute":
                    spans[record["worker"]].append((part["start"], part["stop"]))
    assert sum(map(len, spans.values())) == sum(files)
    assert len(spans) == 2, {worker: len(s) for worker, s in spans.items()}  # both workers converted
    assert all(most_at_once(s) <= 8 for s in spans.values()), {w: most_at_once(s) for w, s in spans.items()}
