"""Benchmark priority (issue 7): one interactive patient started during a running backfill.

    .venv/bin/python benchmarks/priority.py --backfill 260 --scale 0.05 --budget 10/3s

A fresh PostgreSQL database for the Prefect server (dropped at the end), both simulators in a child
process, one Dask LocalCluster shared by everyone. First the interactive patient runs alone
(`patient-docs run ID`, priority 10) for the idle time; then a backfill of N patients runs in this
process (`run_patients(priority=0)`, at most --max-concurrent admitted, the rest waiting); after
--warmup windows the same patient is run again from another process with `patient-docs run ID`.
Prints its start-to-completion time (the flow's own duration as the CLI reports it, and the CLI
process's wall time), the idle time, transfers needed x one transfer-slot interval (window/count),
whether it met "idle time + one slot interval per transfer", and the backfill's transfer-budget use
per window before and after the interactive run (from the activity CSV), plus the audit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

INTERACTIVE = "int-00001"
TRANSFERS_NEEDED = 2  # one search, one download


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backfill", type=int, default=260, help="backfill patients (>= 200 waiting)")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--scale", type=float, default=0.05, help="PATIENT_DOCS_TIME_SCALE")
    parser.add_argument("--budget", default="10/3s", help="DocumentExchange transfer budget")
    parser.add_argument("--files", type=int, default=3, help="the interactive patient's files")
    parser.add_argument("--warmup", type=float, default=6, help="windows of backfill before the interactive run")
    parser.add_argument("--after", type=float, default=6, help="windows of backfill after it, then stop")
    parser.add_argument("--latency-ms", default="5,50")
    parser.add_argument("--interactive-timeout", type=float, default=180, help="give up on the interactive run")
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    return parser.parse_args(argv)


def run_cli(patient_id: str, timeout: float = 600) -> tuple[float, float, str]:
    """`patient-docs run ID` in a new process: (flow seconds as printed, process wall seconds, output)."""
    began = time.monotonic()
    proc = subprocess.run([str(ROOT / ".venv/bin/patient-docs"), "run", patient_id], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=timeout)
    wall = time.monotonic() - began
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(patient_id + "\t")), "")
    if proc.returncode != 0 or "\tCompleted" not in line:
        raise RuntimeError(f"interactive run failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
    return float(line.split("\t")[2].rstrip("s")), wall, line


def transfer_sends(rows) -> list[tuple[float, str]]:
    from patient_docs.audit import micros

    return [(micros(r.timestamp) / 1e6, r.patient_id) for r in rows
            if r.activity == "request" and r.event == "start" and r.args.get("budget") == "docexchange-search"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import backfill as bf  # benchmarks/backfill.py: database, simulators and seeding helpers

    low, high = (float(x) / 1000 for x in args.latency_ms.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="patient-docs-bench-priority-"))
    csv = tmp / "activity.csv"
    env = {
        "PATIENT_DOCS_TIME_SCALE": str(args.scale),
        "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": args.budget,
        "PATIENT_DOCS_ACTIVITY_LOG": str(csv),
        "PATIENT_DOCS_STORAGE_URL": (tmp / "storage").as_uri(),
        "PATIENT_DOCS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'patients.db'}",
        "PATIENT_DOCS_SIM_LATENCY_MIN": str(low),
        "PATIENT_DOCS_SIM_LATENCY_MAX": str(high),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    os.environ.update(env)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PATIENT_DOCS_DASK_ADDRESS", None)

    from deployments.server import prefect_server
    from patient_docs.settings import get_settings

    with ExitStack() as stack:
        _, database_url = stack.enter_context(bf.postgres_database(args.postgres, "patient_docs_bench_prio"))
        _, (dx_url, tt_url) = stack.enter_context(bf.simulators_process(dict(env)))
        os.environ["PATIENT_DOCS_DOCEXCHANGE_URL"] = dx_url
        os.environ["PATIENT_DOCS_TASKTRACKER_URL"] = tt_url
        api = stack.enter_context(prefect_server(tmp / "prefect", database_url=database_url))
        os.environ["PREFECT_API_URL"] = api
        get_settings.cache_clear()
        seed = argparse.Namespace(patients=args.backfill, seed=1)
        counts = bf.file_counts(args.backfill, 1)
        asyncio.run(bf._prepare_and_seed(seed, counts, dx_url))
        asyncio.run(_seed_interactive(args.files, dx_url))

        from patient_docs.runner import environment, prepare, run_patients

        with environment() as settings:  # sets PATIENT_DOCS_DASK_ADDRESS: the CLI runs share the cluster
            asyncio.run(prepare(settings))
            budget = settings.docexchange_transfer_limit
            print(f"idle run of {INTERACTIVE} ...", flush=True)
            idle_flow, idle_wall, idle_line = run_cli(INTERACTIVE)
            print(f"  {idle_line}  (process wall {idle_wall:.1f} s)", flush=True)

            loop = asyncio.new_event_loop()
            box: dict = {}
            ids = [f"bf-{i:05d}" for i in range(args.backfill)]

            def backfill() -> None:
                asyncio.set_event_loop(loop)
                box["task"] = loop.create_task(run_patients(ids, priority=0, max_concurrent=args.max_concurrent))
                try:
                    box["outcomes"] = loop.run_until_complete(box["task"])
                except BaseException as exc:  # noqa: BLE001 - cancelled on purpose at the end
                    box["error"] = exc

            thread = threading.Thread(target=backfill, name="backfill", daemon=True)
            began = time.time()
            thread.start()
            first_send = _wait_first_transfer(csv, began)
            print(f"backfill: first transfer {first_send - began:.1f} s after start; warming up "
                  f"{args.warmup:g} windows", flush=True)
            time.sleep(args.warmup * budget.window)  # benchmark pacing, not synchronisation
            started = time.time()
            try:
                loaded_flow, loaded_wall, loaded_line = run_cli(INTERACTIVE, timeout=args.interactive_timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported as a miss, figures still printed
                loaded_wall = time.time() - started
                loaded_flow, loaded_line = float("inf"), f"{INTERACTIVE}\tDID NOT COMPLETE: {str(exc)[:300]}"
            finished = time.time()
            print(f"  {loaded_line}  (process wall {loaded_wall:.1f} s)", flush=True)
            time.sleep(args.after * budget.window)
            stopped = time.time()
            done = "outcomes" in box
            if not done:
                loop.call_soon_threadsafe(box["task"].cancel)
            thread.join(120)

        from patient_docs.activity_log import read_rows
        from patient_docs.audit import audit

        rows = read_rows(csv)
        report = audit(csv, get_settings())
        stats = __import__("httpx").get(f"{dx_url}/_sim/stats").json()

    sends = transfer_sends(rows)
    inter = [t for t, pid in sends if pid == INTERACTIVE and t >= started]
    backfill_sends = [t for t, pid in sends if pid != INTERACTIVE]
    waiting_admission = max(0, args.backfill - args.max_concurrent)
    interval = budget.window / budget.count
    allowed = idle_flow + TRANSFERS_NEEDED * interval

    w = budget.window

    def use(a: float, b: float) -> float:
        return sum(a <= t < b for t, _ in sends) / budget.count

    nb, na = max(1, int(args.warmup) - 1), max(1, int(args.after) - 1)
    before = [use(started - (k + 1) * w, started - k * w) for k in reversed(range(nb))]
    during = sum(started <= t < finished for t, _ in sends) / (budget.count * max(w, finished - started) / w)
    after = [use(finished + k * w, finished + (k + 1) * w) for k in range(na)]
    print(f"command: {' '.join(['benchmarks/priority.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"backfill {args.backfill} patients (max_concurrent {args.max_concurrent}: {waiting_admission} waiting "
          f"for admission when it began), scale {args.scale}, transfer budget {budget}, interactive patient "
          f"{args.files} files, prefect db postgres; backfill {'finished' if done else 'stopped'} "
          f"{stopped - began:.1f} s after start")
    print(f"interactive {INTERACTIVE} during backfill: flow {loaded_flow:.2f} s (CLI process wall {loaded_wall:.1f} s)")
    print(f"same patient idle: flow {idle_flow:.2f} s (CLI process wall {idle_wall:.1f} s)")
    print(f"transfers needed {TRANSFERS_NEEDED} x slot interval {budget.window:g}/{budget.count} = "
          f"{TRANSFERS_NEEDED * interval:.2f} s; allowed idle + that = {allowed:.2f} s -> "
          f"{'MET' if loaded_flow <= allowed else 'MISSED'} (excess {loaded_flow - allowed:+.2f} s)")
    print(f"interactive transfer sends at {', '.join(f'{t - started:.2f}' for t in inter)} s after its CLI started")
    print(f"transfer-budget use per window (all sends / {budget.count}) before the interactive run "
          f"(oldest first): {', '.join(f'{u:.0%}' for u in before)}; during: {during:.0%}; "
          f"after: {', '.join(f'{u:.0%}' for u in after)}")
    print(f"backfill transfer sends {len(backfill_sends)}; audit: "
          + "; ".join(f"{b.name} requests {b.requests} max in window {b.max_in_window} "
                      f"{'EXCEEDED' if b.exceeded else 'ok'}" for b in report.budgets)
          + f"; simulator rejected { {k: v['rejected'] for k, v in stats['budgets'].items()} }")
    print(f"kept {tmp}")
    return 0


def _wait_first_transfer(csv: Path, since: float, timeout: float = 300) -> float:
    from patient_docs.activity_log import read_rows

    deadline = time.time() + timeout
    while time.time() < deadline:
        sends = [t for t, _ in transfer_sends(read_rows(csv)) if t >= since] if csv.exists() else []
        if sends:
            return min(sends)
        time.sleep(0.5)  # readiness poll of the backfill's first send
    raise TimeoutError("backfill sent no transfer")


async def _seed_interactive(files: int, dx_url: str) -> None:
    import httpx

    from patient_docs import clients
    from patient_docs.models import PatientNames
    from patient_docs.settings import get_settings

    await clients.patients(get_settings()).upsert_patients(
        [PatientNames(patient_id=INTERACTIVE, first_name="Inter", last_name="Active")])
    async with httpx.AsyncClient(base_url=dx_url, timeout=30) as client:
        (await client.post("/_sim/patients", json={"first_name": "Inter", "last_name": "Active", "files": files})).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
