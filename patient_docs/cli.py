"""`patient-docs`: run, backfill, limits apply, simulate, demo, audit, timeline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from patient_docs.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
limits_app = typer.Typer(no_args_is_help=True, help="The named Prefect global concurrency limits.")
app.add_typer(limits_app, name="limits")
console = Console()


def _exit_for(outcomes) -> None:
    raise typer.Exit(0 if all(o.ok for o in outcomes) else 1)


@app.command()
def run(
    patient_ids: Annotated[list[str], typer.Argument(help="One or more patient IDs.")],
    priority: Annotated[int, typer.Option(help="Higher runs first at every limit (interactive default).")] = 10,
) -> None:
    """Run the patient flow for each ID and wait; one line per patient."""
    from patient_docs.runner import environment, prepare, run_patients

    def line(o) -> None:
        docs = "" if o.documents is None else f" documents={o.documents}"
        # Plain tab-separated text, not rich: easy to grep, cut and parse.
        typer.echo(f"{o.patient_id}\t{o.state}{docs}\t{o.seconds:.1f}s\t{o.message if not o.ok else ''}")

    with environment() as settings:
        asyncio.run(prepare(settings))
        outcomes = asyncio.run(run_patients(patient_ids, priority=priority, on_done=line))
    _exit_for(outcomes)


@app.command()
def backfill(
    ids_file: Annotated[Optional[Path], typer.Option(help="File with one patient ID per line.")] = None,
    max_concurrent: Annotated[int, typer.Option(help="Patients before or in their transfers at once (4x that in flight).")] = 50,
    priority: Annotated[int, typer.Option(help="Backfill runs yield to interactive ones.")] = 0,
) -> None:
    """Start the flow for every patient without a status (or from --ids-file) and wait for all."""
    from patient_docs.backfill import backfill as run_backfill

    _exit_for(run_backfill(ids_file, max_concurrent=max_concurrent, priority=priority, console=console))


@limits_app.command("apply")
def limits_apply() -> None:
    """Create or update docexchange-search, docexchange-poll and tasktracker from the settings."""
    from prefect.client.orchestration import get_client

    from patient_docs.limits.budgets import apply_limits

    async def apply():
        async with get_client() as client:
            return await apply_limits(client, get_settings())

    for name, budget in asyncio.run(apply()).items():
        console.print(f"{name}: {budget.count} slots, each held {budget.window:g} s after its response")


@app.command()
def simulate(
    docexchange_port: int = 8101,
    tasktracker_port: int = 8102,
    seed: Annotated[int, typer.Option(help="Seed the embedded database with this many demo patients.")] = 20,
) -> None:
    """Run the DocumentExchange and TaskTracker simulators in the foreground (Ctrl-C stops)."""
    from patient_docs.demo import seed_patients
    from patient_docs.simulators.server import serve_simulators

    settings = get_settings()
    if seed:
        ids = asyncio.run(seed_patients(settings, seed))
        console.print(f"seeded {len(ids)} patients into {settings.database_url}")
    serve_simulators(settings, docexchange_port=docexchange_port, tasktracker_port=tasktracker_port)


@app.command()
def demo(
    patients: Annotated[int, typer.Option(help="How many demo patients.")] = 20,
    keep_open: Annotated[bool, typer.Option(help="Keep the servers running for the UI until Ctrl-C.")] = False,
) -> None:
    """Seed patients, start simulators, Prefect and Dask, run them all, print a summary."""
    import os

    # Before Prefect configures logging: run logs still reach the API (and the UI), not the terminal.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from patient_docs.demo import run_demo

    _exit_for(run_demo(patients, keep_open=keep_open, console=console))


@app.command()
def audit(csv: Annotated[Optional[Path], typer.Argument(help="Activity log (default: PATIENT_DOCS_ACTIVITY_LOG).")] = None) -> None:
    """Most requests seen in any rolling window, per budget; exit 1 if any budget was exceeded."""
    from patient_docs.audit import main

    raise typer.Exit(main(csv, get_settings()))


@app.command()
def timeline(
    csv: Annotated[Optional[Path], typer.Argument(help="Activity log (default: PATIENT_DOCS_ACTIVITY_LOG).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")] = Path("timeline.png"),
) -> None:
    """Draw every activity as bars per patient over time, with transfer-budget use under it."""
    from patient_docs.timeline import draw_timeline

    settings = get_settings()
    summary = draw_timeline(csv or settings.activity_log, output, settings)
    console.print(f"{summary.bars} activities of {summary.patients} patients drawn to {summary.path}")
