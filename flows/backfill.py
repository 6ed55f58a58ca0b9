"""The backfill flow: the patient flow for many IDs, each its own subflow run, from a worker's flow-run process.

Unlike `patient-docs backfill` it starts no servers: it uses the configured PREFECT_API_URL and
PATIENT_DOCS_DASK_ADDRESS. When no Dask address is configured it starts one local cluster for
the whole backfill (not one per patient) and points every patient flow at it.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

from prefect import flow, get_run_logger

from patient_docs.settings import get_settings

BACKFILL = 0


class BackfillFailed(Exception):
    """At least one patient flow run ended Failed or Crashed."""


@flow(name="backfill", flow_run_name="backfill")
async def backfill_flow(ids: list[str] | None = None, max_concurrent: int = 50, priority: int = BACKFILL) -> dict:
    """Run the patient flow for `ids`, or for every patient without a status; fail if any patient failed."""
    from patient_docs import clients
    from patient_docs.runner import Outcome, run_patients

    logger = get_run_logger()
    settings = get_settings()
    if ids is None:
        await clients.patients(settings).create_schema()
        ids = await clients.patients(settings).ids_without_status()
    ids = list(dict.fromkeys(ids))
    if not ids:
        logger.info("nothing to backfill: every patient has a status")
        return {"patients": 0, "completed": 0, "failed": 0, "failed_ids": []}

    with ExitStack() as stack:
        _shared_cluster(stack, logger)
        logger.info("backfill of %d patients, at most %d at once, priority %d", len(ids), max_concurrent, priority)

        def done(outcome: Outcome) -> None:
            if not outcome.ok:
                logger.warning("patient flow %s: %s %s", outcome.flow_run_id, outcome.state, outcome.message)

        outcomes = await run_patients(ids, priority=priority, max_concurrent=max_concurrent, on_done=done)

    failed = sorted(o.patient_id for o in outcomes if not o.ok)
    counts = {"patients": len(outcomes), "completed": len(outcomes) - len(failed), "failed": len(failed),
              "failed_ids": failed}
    logger.info("backfill finished: %(completed)d completed, %(failed)d failed of %(patients)d", counts)
    if failed:
        raise BackfillFailed(f"{len(failed)} of {len(outcomes)} patients failed (IDs in the flow run log)")
    return counts


def _shared_cluster(stack: ExitStack, logger) -> None:
    """With no PATIENT_DOCS_DASK_ADDRESS, one LocalCluster for the whole backfill, if still possible."""
    settings = get_settings()
    if settings.dask_address or "flows.patient" in sys.modules:
        return  # configured scheduler, or the patient flow's task runner is already fixed (a cluster per flow)
    from distributed import LocalCluster

    from patient_docs.cluster import local_cluster_kwargs

    cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(settings)))
    os.environ["PATIENT_DOCS_DASK_ADDRESS"] = cluster.scheduler_address
    get_settings.cache_clear()
    stack.callback(get_settings.cache_clear)
    stack.callback(os.environ.pop, "PATIENT_DOCS_DASK_ADDRESS", None)
    logger.info("no PATIENT_DOCS_DASK_ADDRESS: started a local Dask cluster at %s", cluster.scheduler_address)
