"""`patient-docs backfill`: every patient without a status (or a list), with a live progress display."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from patient_docs import clients
from patient_docs.limits import usage
from patient_docs.limits.budgets import TRANSFER
from patient_docs.runner import Outcome, environment, prepare, run_patients
from patient_docs.settings import Settings

TRANSFERS_PER_PATIENT = 2  # one search, one download


def read_ids(ids_file: Path) -> list[str]:
    """One ID per line; blank lines and # comments skipped; invalid IDs still get a (failing) run."""
    lines = (line.split("#", 1)[0].strip() for line in ids_file.read_text().splitlines())
    return list(dict.fromkeys(line for line in lines if line))


def bound_seconds(patients: int, settings: Settings) -> float:
    """Lower bound set by the transfer budget: N requests per window, two per patient."""
    budget = settings.docexchange_transfer_limit
    return patients * TRANSFERS_PER_PATIENT / budget.count * budget.window


def backfill(ids_file: Path | None, *, max_concurrent: int, priority: int, console: Console) -> list[Outcome]:
    with environment() as settings:
        asyncio.run(prepare(settings))
        ids = read_ids(ids_file) if ids_file else asyncio.run(clients.patients(settings).ids_without_status())
        if not ids:
            console.print("nothing to backfill: every patient has a status")
            return []
        outcomes = asyncio.run(_run_with_progress(ids, settings, max_concurrent, priority, console))
        _picture(outcomes, settings, console)
        return outcomes


def _picture(outcomes: list[Outcome], settings: Settings, console: Console) -> None:
    from patient_docs.timeline import draw_timeline

    picture = settings.activity_log.with_name(f"backfill-{time.strftime('%Y%m%d-%H%M%S')}.png")
    summary = draw_timeline(settings.activity_log, picture, settings, flow_run_ids={o.flow_run_id for o in outcomes})
    failed = sum(not o.ok for o in outcomes)
    console.print(f"{len(outcomes) - failed} completed, {failed} failed; timeline of {summary.patients} patients: {picture}")


async def _run_with_progress(ids, settings, max_concurrent, priority, console) -> list[Outcome]:
    budget = settings.docexchange_transfer_limit
    columns = (TextColumn("[bold]backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
               TextColumn("transfer budget {task.fields[use]}"), TextColumn("ETA ≥ {task.fields[eta]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("patients", total=len(ids), failed=0, use="–", eta=f"{bound_seconds(len(ids), settings):.0f}s")

        def done(outcome: Outcome) -> None:
            progress.update(bar, advance=1, failed=progress.tasks[0].fields["failed"] + (not outcome.ok))

        async def refresh() -> None:
            # Use: this process's transfer requests in the last window over the budget. ETA: the
            # transfer bound for the patients not yet done (no backfill can finish sooner).
            while True:
                left = len(ids) - int(progress.tasks[0].completed)
                progress.update(bar, use=f"{usage.use(TRANSFER, budget):.0%}", eta=f"{bound_seconds(left, settings):.0f}s")
                await asyncio.sleep(1.0)

        ticker = asyncio.create_task(refresh())
        try:
            return await run_patients(ids, priority=priority, max_concurrent=max_concurrent, on_done=done)
        finally:
            ticker.cancel()
