"""Run many patient flows from one process: the engine behind `run`, `backfill` and `demo`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass

from patient_docs import admission
from patient_docs.settings import HOME, Settings, get_settings


@dataclass
class Outcome:
    patient_id: str
    state: str  # Completed | Failed | Crashed
    message: str
    documents: int | None
    seconds: float
    flow_run_id: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "Completed"


def _set_env(name: str, value: str) -> None:
    os.environ[name] = value


@contextmanager
def environment(settings: Settings | None = None) -> Iterator[Settings]:
    """A Prefect API and a Dask cluster that every flow (and every Dask worker) of this process shares."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.server import prefect_server
    from patient_docs.limits.broker import reset_broker

    with ExitStack() as stack:
        api = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
        if not api:
            # Dask workers are other processes: they need a real server URL, not an ephemeral API.
            api = stack.enter_context(prefect_server(HOME.resolve() / "prefect"))
        _set_env("PREFECT_API_URL", api)
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
        # Runs before the server stops: held slots are handed over to lease expiry, not lost.
        stack.callback(reset_broker)
        get_settings.cache_clear()
        settings = settings or get_settings()
        if not settings.dask_address:
            from distributed import LocalCluster

            from patient_docs.cluster import local_cluster_kwargs

            cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(settings)))
            _set_env("PATIENT_DOCS_DASK_ADDRESS", cluster.scheduler_address)
            get_settings.cache_clear()
            settings = get_settings()
        yield settings


async def prepare(settings: Settings) -> None:
    """Create the patients table if missing and the named limits from the settings."""
    from prefect.client.orchestration import get_client

    from patient_docs import clients
    from patient_docs.limits.budgets import apply_limits

    await clients.patients(settings).create_schema()
    async with get_client() as client:
        await apply_limits(client, settings)


async def create_runs(ids: list[str], *, priority: int, tags: tuple[str, ...] = ()) -> list:
    """Create every patient's flow run at once (Pending in the UI until admitted)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from flows.patient import patient_flow

    async with get_client() as client:
        gate = asyncio.Semaphore(8)  # creation is cheap but not free for the server's database

        async def create(patient_id: str):
            parameters = {"patient_id": patient_id, "priority": priority}
            async with gate:
                return await client.create_flow_run(
                    patient_flow, parameters=parameters, name=f"patient-{patient_id}"[:100], tags=list(tags),
                    state=Pending(message="waiting for admission"), parent_task_run_id=await _parent(parameters),
                )

        return list(await asyncio.gather(*(create(pid) for pid in ids)))


@asynccontextmanager
async def _transfer_stage(gate: asyncio.Semaphore, patient_id: str):
    """Hold a place in `gate` until the patient's transfers are done (or its flow ended)."""
    await gate.acquire()
    held = True

    def leave() -> None:
        nonlocal held
        if held:
            held = False
            gate.release()

    admission.on_transfers_done(patient_id, leave)
    try:
        yield
    finally:
        admission.forget(patient_id)
        leave()


async def _parent(parameters: dict):
    """Inside a flow (the backfill deployment), a tracking task run makes each patient a subflow in the UI."""
    from prefect import Task
    from prefect.context import FlowRunContext

    from flows.patient import patient_flow

    context = FlowRunContext.get()
    if context is None:
        return None
    # What Prefect's engine does for a subflow call; the server then mirrors the subflow's state on it.
    tracker = Task(name=patient_flow.name, fn=patient_flow.fn)
    tracker._is_subflow_tracking_task = True
    return (await tracker.create_run(flow_run_context=context, parameters=parameters)).id


async def run_patients(
    ids: list[str], *, priority: int, max_concurrent: int = 50,
    on_done: Callable[[Outcome], None] | None = None, tags: tuple[str, ...] = (), in_flight: int | None = None,
) -> list[Outcome]:
    """Run the flow for every ID; never raises for a failed patient.

    At most `max_concurrent` patients are before or in their transfers (search, poll, download);
    at most `in_flight` (default 4 x max_concurrent) are running in all. All flow runs are
    created first, so the UI shows the whole batch at once; admission then runs them in this
    process, which keeps memory flat (one event loop, no process per run).
    """
    from prefect.flow_engine import run_flow_async

    from flows.patient import patient_flow  # imported late: its task runner reads the settings

    flow_runs = await create_runs(ids, priority=priority, tags=tags)
    gate = asyncio.Semaphore(max_concurrent)
    cap = asyncio.Semaphore(in_flight or 4 * max_concurrent)

    async def one(patient_id: str, flow_run) -> Outcome:
        async with cap, _transfer_stage(gate, patient_id):
            start = time.monotonic()
            try:
                state = await run_flow_async(patient_flow, flow_run=flow_run, parameters=flow_run.parameters,
                                             return_type="state")
            except Exception as exc:  # noqa: BLE001 - e.g. the Prefect API refused a state change
                outcome = Outcome(patient_id, "Crashed", f"{type(exc).__name__}: {exc}", None,
                                  time.monotonic() - start, str(flow_run.id))
            else:
                documents = (await state.result())["documents"] if state.is_completed() else None
                outcome = Outcome(patient_id, state.type.value.title(), state.message or "", documents,
                                  time.monotonic() - start, str(flow_run.id))
        if on_done:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(pid, fr) for pid, fr in zip(ids, flow_runs))))
