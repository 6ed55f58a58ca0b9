"""`patient-docs demo`: the whole product on embedded defaults, in well under three minutes."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

from rich.console import Console
from rich.table import Table

from patient_docs import clients
from patient_docs.models import PatientNames
from patient_docs.runner import Outcome, environment, prepare, run_patients
from patient_docs.settings import Settings, get_settings

# Simulated durations at a tenth, and the transfer budget's window with them: 10/6 s instead of 10/60 s.
DEMO_ENV = {
    "PATIENT_DOCS_TIME_SCALE": "0.1",
    "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": "10/6s",
    "PATIENT_DOCS_LOG_PATIENT_NAMES": "true",  # simulated people only
}
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Tony"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Hoare"]


async def seed_patients(settings: Settings, count: int) -> list[str]:
    """Insert (or refresh) `count` demo patients demo-001… and return their IDs."""
    rng = random.Random(7)
    rows = [PatientNames(patient_id=f"demo-{i:03d}", first_name=rng.choice(FIRST), last_name=f"{rng.choice(LAST)}-{i}")
            for i in range(1, count + 1)]
    repo = clients.patients(settings)
    await repo.create_schema()
    await repo.upsert_patients(rows)
    return [row.patient_id for row in rows]


def run_demo(count: int, *, keep_open: bool, console: Console) -> list[Outcome]:
    from patient_docs.simulators.server import run_simulators

    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    started = time.monotonic()
    with run_simulators(get_settings()) as (dx_url, tt_url, *_):
        os.environ["PATIENT_DOCS_DOCEXCHANGE_URL"], os.environ["PATIENT_DOCS_TASKTRACKER_URL"] = dx_url, tt_url
        get_settings.cache_clear()
        with environment() as settings:
            console.print(f"Prefect API {os.environ['PREFECT_API_URL']} · Dask {settings.dask_address} · "
                          f"DocumentExchange {dx_url} · TaskTracker {tt_url}")
            asyncio.run(prepare(settings))
            ids = asyncio.run(seed_patients(settings, count))
            with console.status(f"running {len(ids)} patients…"):
                outcomes = asyncio.run(run_patients(ids, priority=10))
            _summary(console, outcomes, settings, time.monotonic() - started)
            if keep_open:
                console.print("servers stay up for the UI; Ctrl-C to stop")
                threading.Event().wait()
    return outcomes


def _summary(console: Console, outcomes: list[Outcome], settings: Settings, seconds: float) -> None:
    from patient_docs.timeline import draw_timeline

    table = Table(title=f"patient-docs demo: {len(outcomes)} patients in {seconds:.0f} s")
    for column in ("patient", "outcome", "files", "seconds"):
        table.add_column(column)
    for o in sorted(outcomes, key=lambda o: o.patient_id):
        table.add_row(o.patient_id, o.state if o.ok else f"{o.state}: {o.message}", str(o.documents), f"{o.seconds:.1f}")
    console.print(table)
    picture = settings.activity_log.with_name("demo-timeline.png")
    draw_timeline(settings.activity_log, picture, settings, flow_run_ids={o.flow_run_id for o in outcomes})
    console.print(
        f"time scale {settings.time_scale:g} (simulated durations ×{settings.time_scale:g}); budgets: transfer "
        f"{settings.docexchange_transfer_limit}, poll {settings.docexchange_poll_limit}, TaskTracker {settings.tasktracker_limit}\n"
        f"activity log: {settings.activity_log}\nstorage: {settings.storage_url}\ndatabase: {settings.database_url}\n"
        f"timeline: {picture}\nPrefect UI: run `PREFECT_HOME={settings.activity_log.parent / 'prefect'} prefect server start` "
        f"and open http://127.0.0.1:4200 (or use --keep-open: {os.environ['PREFECT_API_URL'].removesuffix('/api')})"
    )
