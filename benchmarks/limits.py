"""Benchmark the slot broker: P processes push N transfers through `budget_slot` against the simulator.

    .venv/bin/python benchmarks/limits.py --transfers 200 --budget 10/6s --processes 3 --concurrency 10

Prints, per budget: violations (requests the simulator rejected), the most arrivals in any rolling
window, steady-state use, and the Prefect API requests per second the waiting slot brokers caused.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=200, help="transfers in total (all processes)")
    parser.add_argument("--budget", default="10/60s", help="the DocumentExchange transfer budget, COUNT/SECONDSs")
    parser.add_argument("--processes", type=int, default=3, help="worker processes, each with its own broker")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent requesters per process")
    parser.add_argument("--latency-ms", default="5,50", help="simulator latency MIN,MAX in ms (each way)")
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432",
                        help="server URL used to create and drop the benchmark database")
    parser.add_argument("--exit", choices=("handover", "drain"), default="handover",
                        help="how a worker that ran out of transfers leaves: reset_broker() hands its holds over "
                             "to lease expiry (>= 60 s); drain waits them out")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (activity CSV, server log)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- worker processes


def _claim(remaining) -> bool:
    with remaining.get_lock():
        if remaining.value <= 0:
            return False
        remaining.value -= 1
        return True


async def _work(index: int, concurrency: int, remaining, results, drain: bool) -> None:
    from patient_docs import clients
    from patient_docs.errors import RateLimited
    from patient_docs.limits.broker import get_broker, reset_broker
    from patient_docs.limits.budgets import TRANSFER
    from patient_docs.limits.slot import budget_slot
    from patient_docs.settings import Settings

    settings = Settings()
    sent = rejected = errors = 0

    async with clients.docexchange(settings) as dx:

        async def requester(slot: int) -> None:
            nonlocal sent, rejected, errors
            while _claim(remaining):
                n = sent + rejected + errors
                async with budget_slot(TRANSFER, settings, patient_id=f"bench-{index}-{slot}-{n}", process=index):
                    try:
                        await dx.start_search(f"First{index}x{slot}", f"Last{n}")
                        sent += 1
                    except RateLimited:
                        rejected += 1
                    except Exception:  # noqa: BLE001 - counted and reported, the benchmark goes on
                        errors += 1

        await asyncio.gather(*(requester(slot) for slot in range(concurrency)))
    results.put({"process": index, "sent": sent, "rejected": rejected, "errors": errors,
                 "api_calls": get_broker(settings).api_calls})
    reset_broker(wait=drain)  # handover: as a real process exit (atexit) does


def worker(index: int, concurrency: int, remaining, results, ready, start, drain: bool) -> None:
    import patient_docs.clients, patient_docs.limits.slot  # noqa: E401,F401 - import before the clock starts

    ready.release()
    start.wait()
    asyncio.run(_work(index, concurrency, remaining, results, drain))


# ---------------------------------------------------------------- the harness

SIM_BUDGET = {"docexchange-search": "transfer", "docexchange-poll": "poll", "tasktracker": "tasktracker"}


@contextmanager
def postgres_database(server_url: str):
    """Create `patient_docs_bench_<random>` for the Prefect server; drop it afterwards."""
    import asyncpg

    name = f"patient_docs_bench_{secrets.token_hex(4)}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server_url}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    low, high = (float(x) / 1000 for x in args.latency_ms.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="patient-docs-bench-limits-"))
    csv = tmp / "activity.csv"
    os.environ.update({
        "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": args.budget,
        "PATIENT_DOCS_ACTIVITY_LOG": str(csv),
        "PATIENT_DOCS_SIM_LATENCY_MIN": str(low),
        "PATIENT_DOCS_SIM_LATENCY_MAX": str(high),
        "PATIENT_DOCS_REQUEST_TIMEOUT": "30",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    os.environ.pop("PREFECT_API_URL", None)

    from deployments.server import prefect_server
    from patient_docs.audit import audit
    from patient_docs.limits.budgets import LIMITS, TRANSFER, apply_limits, budget_for
    from patient_docs.settings import Settings
    from patient_docs.simulators.server import run_simulators

    settings = Settings()
    budget = budget_for(TRANSFER, settings)
    with ExitStack() as stack:
        database_url = None
        if args.prefect_db == "postgres":
            database_url = stack.enter_context(postgres_database(args.postgres))
        api = stack.enter_context(prefect_server(tmp / "prefect", database_url=database_url))
        sims = stack.enter_context(run_simulators(settings))
        os.environ["PREFECT_API_URL"] = api
        os.environ["PATIENT_DOCS_DOCEXCHANGE_URL"] = sims.docexchange_url
        os.environ["PATIENT_DOCS_TASKTRACKER_URL"] = sims.tasktracker_url
        settings = Settings()

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def apply() -> None:
            with temporary_settings(updates={PREFECT_API_URL: api}):
                async with get_client() as client:
                    await apply_limits(client, settings)

        asyncio.run(apply())

        ctx = mp.get_context("spawn")
        remaining = ctx.Value("i", args.transfers)
        results = ctx.Queue()
        ready, start = ctx.Semaphore(0), ctx.Event()
        procs = [
            ctx.Process(target=worker, args=(i, args.concurrency, remaining, results, ready, start, args.exit == "drain"))
            for i in range(args.processes)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()  # every interpreter has imported Prefect before the clock starts
        began = time.monotonic()
        start.set()
        reports = [results.get() for _ in procs]
        elapsed = time.monotonic() - began
        for proc in procs:
            proc.join()
        stats = sims.docexchange_app.state.sim.stats()["budgets"]
        report = audit(csv, settings)

    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}")
    print(f"prefect database: {args.prefect_db}; processes {args.processes} x concurrency {args.concurrency}; "
          f"latency {args.latency_ms} ms each way; worker exit: {args.exit}")
    sent = sum(r["sent"] for r in reports)
    api_calls = sum(r["api_calls"] for r in reports)
    print(f"elapsed {elapsed:.1f} s; transfers ok {sent}, rejected {sum(r['rejected'] for r in reports)}, "
          f"errors {sum(r['errors'] for r in reports)}")
    print(f"prefect API acquisition calls {api_calls} = {api_calls / elapsed:.2f}/s "
          f"(per process: {', '.join(str(r['api_calls']) for r in sorted(reports, key=lambda r: r['process']))})")
    for item in report.budgets:
        if not item.requests:
            continue
        sim = stats.get(SIM_BUDGET.get(item.name, item.name), {})
        print(f"budget {item.name} {item.budget}: requests {item.requests}, "
              f"violations (simulator rejected) {sim.get('rejected')}, "
              f"simulator max in any window {sim.get('max_in_any_window')}, "
              f"audit max in window {item.max_in_window} ({'EXCEEDED' if item.exceeded else 'ok'})")
        from patient_docs.audit import micros
        from patient_docs.activity_log import read_rows

        starts = [micros(r.timestamp) for r in read_rows(csv) if r.activity == "request" and r.event == "start"
                  and f'"budget": "{item.name}"' in r.arguments]
        span = (max(starts) - min(starts)) / 1e6
        b = item.budget
        ideal = b.count * (span / b.window) + b.count
        steady = "-" if item.steady_use is None else f"{item.steady_use:.4f}"
        print(f"  first->last send {span:.2f} s; steady use (audit) {steady}; "
              f"transfers/(count*(span/W)+count) = {item.requests}/{ideal:.1f} = {item.requests / ideal:.4f}")
    for name, sim in stats.items():
        print(f"simulator budget {name} {sim['budget']}: arrivals {sim['arrivals']}, rejected {sim['rejected']}, "
              f"max in any window {sim['max_in_any_window']}")
    if args.keep:
        print(f"kept {tmp}")
    return 0 if all(s.get("rejected", 0) == 0 for s in stats.values()) and not report.exceeded else 1


if __name__ == "__main__":
    sys.exit(main())
