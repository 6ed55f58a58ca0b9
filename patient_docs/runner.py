"""Run many patient flows from one process: the engine behind `run`, `backfill` and `demo`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


def run_creator(*, priority: int, tags: tuple[str, ...] = ()):
    """An async function creating one patient's flow run (Pending in the UI until admitted)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from flows.patient import patient_flow

    client = get_client()
    gate = asyncio.Semaphore(16)  # creation is cheap but not free for the server's database

    async def create(patient_id: str):
        parameters = {"patient_id": patient_id, "priority": priority}
        async with gate:
            return await client.create_flow_run(
                patient_flow, parameters=parameters, name=f"patient-{patient_id}"[:100], tags=list(tags),
                state=Pending(message="waiting for admission"), parent_task_run_id=await _parent(parameters),
            )

    return client, create


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


# More patients than this at once log only to the Prefect API: a console line per activity of
# hundreds of runs is unreadable, and rendering them cost 8 % of a backfill's CPU.
CONSOLE_LOG_PATIENTS = 5


@contextmanager
def _run_logs_to_api_only() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    saved = [logger.propagate for logger in loggers]  # their own handler ships to the API; the console is the root's
    for logger in loggers:
        logger.propagate = False
    try:
        yield
    finally:
        for logger, value in zip(loggers, saved):
            logger.propagate = value


# Prefect's server on SQLite failed at 200 concurrent subflows ("database is locked", then the parent
# crashed); these widths kept it healthy in every run on this machine. PostgreSQL has no such cap.
SQLITE_MAX_CONCURRENT, SQLITE_IN_FLIGHT = 20, 50


def prefect_database() -> str:
    """'sqlite', 'postgresql' or 'unknown': where the Prefect server this process talks to keeps its state.

    The API does not tell (it masks the connection URL), so: the server this process started, else
    a server on this machine read with this process's settings; the README's setup puts the URL in
    the Prefect profile, which the server and the backfill share.
    """
    from urllib.parse import urlparse

    from prefect.settings import PREFECT_API_URL, get_current_settings

    from deployments.server import STARTED

    api = PREFECT_API_URL.value() or ""
    if api in STARTED:
        url = STARTED[api]
    elif urlparse(api).hostname not in (None, "127.0.0.1", "localhost", "::1"):
        return "unknown"
    else:
        url = (os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
               or get_current_settings().server.database.connection_url.get_secret_value())
    return "sqlite" if url.startswith("sqlite") else "postgresql" if url.startswith("postgresql") else "unknown"


def admission_widths(patients: int, max_concurrent: int, in_flight: int | None) -> tuple[int, int, str | None]:
    """The widths to run with, and a warning when a SQLite Prefect server forces smaller ones."""
    in_flight = in_flight or 4 * max_concurrent
    if prefect_database() != "sqlite" or (max_concurrent <= SQLITE_MAX_CONCURRENT and in_flight <= SQLITE_IN_FLIGHT):
        return max_concurrent, in_flight, None
    narrow = min(max_concurrent, SQLITE_MAX_CONCURRENT), min(in_flight, SQLITE_IN_FLIGHT)
    return *narrow, (
        f"The Prefect server stores its state in SQLite, which fails ('database is locked') with a few hundred "
        f"flow runs at once: these {patients} patients run at most {narrow[0]} in their transfers and {narrow[1]} "
        f"in all (asked: {max_concurrent} and {in_flight}). For large backfills run the server on PostgreSQL "
        f"(README, 'Prefect on PostgreSQL')."
    )


async def run_patients(
    ids: list[str], *, priority: int, max_concurrent: int = 50,
    on_done: Callable[[Outcome], None] | None = None, tags: tuple[str, ...] = (), in_flight: int | None = None,
    console_logs: bool | None = None,
) -> list[Outcome]:
    """Run the flow for every ID; never raises for a failed patient.

    At most `max_concurrent` patients are before or in their transfers (search, poll, download);
    at most `in_flight` (default 4 x max_concurrent) are running in all. Every flow run is
    created at the start, so the UI shows the whole batch at once; admission runs them in this
    process, which keeps memory flat (one event loop, no process per run). The runs' logs go to
    the Prefect API (the UI) always, and to this console only for a few patients (`console_logs`).
    """
    from prefect.flow_engine import run_flow_async

    from flows.patient import patient_flow  # imported late: its task runner reads the settings
    from patient_docs.cluster import close_dask_clients, dask_client

    max_concurrent, in_flight, warning = admission_widths(len(ids), max_concurrent, in_flight)
    if warning:
        _logger().warning(warning)
    client, create = run_creator(priority=priority, tags=tags)
    gate = asyncio.Semaphore(max_concurrent)
    cap = asyncio.Semaphore(in_flight)
    async def one(patient_id: str, created: asyncio.Future) -> Outcome:
        flow_run = await created
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

    runs: list[asyncio.Future] = []
    quiet = not console_logs if console_logs is not None else len(ids) > CONSOLE_LOG_PATIENTS
    try:
        settings = get_settings()
        if settings.dask_address:  # connect while the first archives download, not after
            asyncio.ensure_future(dask_client(settings)).add_done_callback(lambda f: f.cancelled() or f.exception())
        async with client, _shared_prefect_clients():
            with _run_logs_to_api_only() if quiet else contextlib.nullcontext():
                # Every run's creation is asked for at once, in order; a patient is admitted as soon as
                # its own run exists, so the first transfers do not wait until the last of N is created.
                runs = [asyncio.ensure_future(create(pid)) for pid in ids]
                return list(await asyncio.gather(*(one(pid, run) for pid, run in zip(ids, runs))))
    finally:
        for run in runs:
            run.cancel()
        await close_dask_clients()


@asynccontextmanager
async def _shared_prefect_clients():
    # Every flow run otherwise opens its own Prefect clients, one of them sync (the result-storage
    # lookup): building their SSL contexts was a fifth of a backfill's CPU. One pair serves all runs.
    from prefect.context import AsyncClientContext, SyncClientContext

    with SyncClientContext.get_or_create():
        async with AsyncClientContext.get_or_create():
            yield


def _logger():
    from prefect.context import FlowRunContext
    from prefect.logging import get_logger, get_run_logger

    return get_run_logger() if FlowRunContext.get() else get_logger("patient_docs.backfill")
