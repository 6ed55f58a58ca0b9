"""Benchmark a backfill at scale: N patients through `environment()` + `run_patients(priority=0)`.

    .venv/bin/python benchmarks/backfill.py --patients 200 --scale 0.05 --prefect-db postgres --max-concurrent 50

A fresh PostgreSQL database for the Prefect server (dropped at the end; `--prefect-db sqlite` for
SQLite) and one for the patients table (`--patients-db sqlite` for a temporary SQLite file); both
simulators in a child process with latency; N patients with a realistic file-count mix; every
simulated duration and the transfer budget's window multiplied by `--scale`. Prints makespan, the
lower bound and which term binds, conversion-slot use while files waited, peak RSS per process,
Prefect API errors and calls, budget violations and Prefect database growth per patient.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOALS = {"ratio": 1.05, "slot_use": 0.95, "errors": 0, "violations": 0, "rss_bytes": 1e9}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=0.05, help="PATIENT_DOCS_TIME_SCALE; transfer window 60*scale s")
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--patients-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--max-concurrent", type=int, default=50)
    parser.add_argument("--dask", choices=("external", "local"), default="external",
                        help="external: `dask scheduler` + `dask worker --resources` processes; local: LocalCluster")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--files", type=int, default=None, help="every patient has this many files (default: the mix)")
    parser.add_argument("--latency-ms", default="5,50", help="simulator latency MIN,MAX in ms (each way)")
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (CSV, server log)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- setup helpers


def file_counts(n: int, seed: int) -> list[int]:
    """Most 0-20 files, ~8 % 100-500, ~1 % 2500-3000 (shuffled, reproducible)."""
    rng = random.Random(seed)
    big = max(1, round(n * 0.01)) if n >= 50 else 0
    medium = round(n * 0.08)
    counts = [rng.randint(2500, 3000) for _ in range(big)] + [rng.randint(100, 500) for _ in range(medium)]
    counts += [rng.randint(0, 20) for _ in range(n - len(counts))]
    rng.shuffle(counts)
    return counts


async def _pg(dsn: str, sql: str):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def pg_admin_dsn(server_url: str, db: str = "postgres") -> str:
    return server_url.replace("postgresql+asyncpg://", "postgresql://") + f"/{db}"


@contextmanager
def postgres_database(server_url: str, prefix: str):
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_pg(pg_admin_dsn(server_url), f'CREATE DATABASE "{name}"'))
    try:
        yield name, f"{server_url}/{name}"
    finally:
        asyncio.run(_pg(pg_admin_dsn(server_url), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def db_size(server_url: str, name: str) -> int:
    return int(asyncio.run(_pg(pg_admin_dsn(server_url), f"SELECT pg_database_size('{name}')")))


def _simulators_main(env: dict[str, str], urls, stop) -> None:
    os.environ.update(env)
    from patient_docs.settings import Settings
    from patient_docs.simulators.server import run_simulators

    with run_simulators(Settings()) as sims:
        urls.put((sims.docexchange_url, sims.tasktracker_url))
        stop.wait()


@contextmanager
def simulators_process(env: dict[str, str]):
    """Both simulators in a child process, so their memory and CPU are not the orchestrator's."""
    ctx = mp.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_simulators_main, args=(env, urls, stop), daemon=True)
    proc.start()
    try:
        yield proc, urls.get(timeout=60)
    finally:
        stop.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()


class RssSampler(threading.Thread):
    """Every second: RSS of this process and all its descendants, peak per process (pid, name)."""

    def __init__(self, labels: dict[int, str]):
        super().__init__(daemon=True, name="rss-sampler")
        import psutil

        self.psutil = psutil
        self.labels = labels  # pid -> label for processes that are not orchestration (e.g. simulators)
        self.peak: dict[tuple[int, str], int] = {}
        self.peak_total = 0  # orchestration: everything but the simulators and the Dask workers
        self.peak_with_workers = 0  # ... plus the conversion workers (their own 12 GB machines in production)
        self.samples = 0
        self.stop_event = threading.Event()

    def label(self, proc) -> str:
        if proc.pid == os.getpid():
            return "orchestrator (flows, broker; Dask scheduler with --dask local)"
        if proc.pid in self.labels:
            return self.labels[proc.pid]
        try:
            cmd = " ".join(proc.cmdline())
        except self.psutil.Error:
            return "?"
        if "prefect" in cmd and "server" in cmd:
            return "prefect server"
        if "uvicorn" in cmd or "prefect.server" in cmd:
            return "prefect server child"
        if "dask scheduler" in cmd:
            return "dask scheduler (own process)"
        if "dask worker" in cmd:
            return "dask worker nanny"
        if "resource_tracker" in cmd:
            return "multiprocessing resource tracker"
        if "multiprocessing" in cmd or "distributed" in cmd:
            parent = proc.parent()
            return "dask worker (spawned by the in-process nanny)" if parent and parent.pid == os.getpid() else "dask worker"
        return cmd[:60]

    def sample(self) -> None:
        me = self.psutil.Process()
        total = workers = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss
                key = (proc.pid, self.label(proc))
            except self.psutil.Error:
                continue
            self.peak[key] = max(self.peak.get(key, 0), rss)
            if key[1].startswith("dask worker"):
                workers += rss
            elif key[1] not in self.labels.values():
                total += rss
        self.peak_total = max(self.peak_total, total)
        self.peak_with_workers = max(self.peak_with_workers, total + workers)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.sample()


class ApiCounter:
    """Count HTTP requests this process sends to the Prefect API (httpx.AsyncClient.send)."""

    def __init__(self, api: str):
        import httpx

        self.api, self.calls, self.errors5xx = api.rstrip("/"), 0, 0
        self.seconds = 0.0  # summed latency of those calls (retries inside one call included)
        self.broker_calls, self.broker_seconds = 0, 0.0  # the slot broker's thread alone
        original = httpx.AsyncClient.send
        counter = self

        async def send(client, request, *args, **kwargs):
            began = time.monotonic()
            response = await original(client, request, *args, **kwargs)
            if str(request.url).startswith(counter.api):
                took = time.monotonic() - began
                counter.calls += 1
                counter.seconds += took
                counter.errors5xx += response.status_code >= 500
                if threading.current_thread().name == "slot-broker":
                    counter.broker_calls += 1
                    counter.broker_seconds += took
            return response

        httpx.AsyncClient.send = send


# ---------------------------------------------------------------- analysis of the activity CSV


def slot_use(rows, workers: int, available_at: str = "stored") -> dict:
    """While converted files waited for a slot: fraction of the `workers` slots that were busy.

    A patient's files become available when its store_archive finishes (its `files` are then known
    from the convert_documents start row); each convert_document start takes a slot and its finish
    gives it back. Over the periods where available - started > 0, integrate min(busy, workers).
    """
    from patient_docs.audit import micros

    events: list[tuple[int, int, int, int]] = []  # (t, d_available, d_started, d_finished)
    stored_at: dict[str, int] = {}
    for row in rows:
        t = micros(row.timestamp)
        if row.activity == "store_archive" and row.event == "finish" and row.outcome == "ok":
            stored_at[row.patient_id] = t
        elif row.activity == "convert_documents" and row.event == "start":
            files = int(row.args.get("files", 0))
            # "stored": a file waits from its archive's storing; "submitted": from its Dask submission
            when = stored_at.get(row.patient_id, t) if available_at == "stored" else t
            events.append((when, files, 0, 0))
        elif row.activity == "convert_document":
            events.append((t, 0, row.event == "start", row.event == "finish"))
    events.sort()
    available = started = finished = 0
    queued_us = busy_us = 0.0
    prev = None
    for t, da, ds, df in events:
        if prev is not None and available - started > 0:
            queued_us += t - prev
            busy_us += (t - prev) * min(started - finished, workers) / workers
        available, started, finished = available + da, started + ds, finished + df
        prev = t
    return {"queued_s": queued_us / 1e6, "use": busy_us / queued_us if queued_us else None,
            "conversions": finished}


def transfer_gaps(rows) -> float:
    from patient_docs.audit import micros

    sends = sorted(micros(r.timestamp) for r in rows
                   if r.activity == "request" and r.event == "start" and r.args.get("budget") == "docexchange-search")
    return max((b - a for a, b in zip(sends, sends[1:])), default=0) / 1e6


def milestones(rows, began_wall: float) -> dict[str, float]:
    """Seconds after run_patients was called: first and last of the activities that set the makespan."""
    from patient_docs.audit import micros

    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for row in rows:
        key = f"{row.activity}.{row.event}"
        if row.activity == "request" and row.event == "start":
            key = f"request.{row.args.get('endpoint')}"
        t = micros(row.timestamp) / 1e6 - began_wall
        first.setdefault(key, t)
        last[key] = t
    keys = ("read_patient_names.start", "request.search", "request.download", "store_archive.finish",
            "convert_document.start", "convert_document.finish", "append_report.finish")
    return {k: (first.get(k, float("nan")), last.get(k, float("nan"))) for k in keys}


def step_means(rows) -> dict[str, float]:
    """Mean duration of each flow step (finish rows), seconds."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.event == "finish" and row.duration_s and row.activity not in ("convert_document", "request"):
            total[row.activity] += float(row.duration_s)
            count[row.activity] += 1
    return {k: total[k] / count[k] for k in total}


STEP_OF = {("docexchange-search", "search"): "search", ("docexchange-search", "download"): "store_archive",
           ("tasktracker", "create"): "create_entry", ("tasktracker", "status"): "set_entry_status",
           ("tasktracker", "report"): "append_report"}


def slot_waits(rows) -> dict[str, float]:
    """Median seconds from a step's start to its request's send: mostly waiting for the broker's slot."""
    from statistics import median

    from patient_docs.audit import micros

    started: dict[tuple[str, str], int] = {}
    waits: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.event == "start" and row.activity != "request":
            started[(row.patient_id, row.activity)] = micros(row.timestamp)
        elif row.activity == "request" and row.event == "start":
            key = (row.args.get("budget"), row.args.get("endpoint"))
            step = STEP_OF.get(key)
            if step and (row.patient_id, step) in started:
                waits[f"{key[0]}:{key[1]}"].append((micros(row.timestamp) - started[(row.patient_id, step)]) / 1e6)
    return {k: median(v) for k, v in waits.items()}


def server_log_errors(log: Path) -> int:
    if not log.exists():
        return 0
    text = log.read_text(errors="replace")
    return len(re.findall(r'" 5\d\d\b|Internal Server Error|status_code=5\d\d', text))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    low, high = (float(x) / 1000 for x in args.latency_ms.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="patient-docs-bench-backfill-"))
    csv = tmp / "activity.csv"
    window = 60 * args.scale
    env = {
        "PATIENT_DOCS_TIME_SCALE": str(args.scale),
        "PATIENT_DOCS_DOCEXCHANGE_TRANSFER_LIMIT": f"10/{window:g}s",
        "PATIENT_DOCS_ACTIVITY_LOG": str(csv),
        "PATIENT_DOCS_STORAGE_URL": (tmp / "storage").as_uri(),
        "PATIENT_DOCS_SIM_LATENCY_MIN": str(low),
        "PATIENT_DOCS_SIM_LATENCY_MAX": str(high),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    os.environ.update(env)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PATIENT_DOCS_DASK_ADDRESS", None)
    counts = [args.files] * args.patients if args.files is not None else file_counts(args.patients, args.seed)

    from deployments.server import prefect_server
    from patient_docs.settings import get_settings

    result: dict = {}
    with ExitStack() as stack:
        if args.patients_db == "postgres":
            _, patients_url = stack.enter_context(postgres_database(args.postgres, "patient_docs_bench_patients"))
        else:
            patients_url = f"sqlite+aiosqlite:///{tmp / 'patients.db'}"
        os.environ["PATIENT_DOCS_DATABASE_URL"] = env["PATIENT_DOCS_DATABASE_URL"] = patients_url
        prefect_db = None
        database_url = None
        if args.prefect_db == "postgres":
            prefect_db, database_url = stack.enter_context(postgres_database(args.postgres, "patient_docs_bench_prefect"))
        sim_proc, (dx_url, tt_url) = stack.enter_context(simulators_process(dict(env)))
        os.environ["PATIENT_DOCS_DOCEXCHANGE_URL"] = dx_url
        os.environ["PATIENT_DOCS_TASKTRACKER_URL"] = tt_url
        api = stack.enter_context(prefect_server(tmp / "prefect", database_url=database_url))
        os.environ["PREFECT_API_URL"] = api
        get_settings.cache_clear()

        sampler = RssSampler({sim_proc.pid: "simulators (not orchestration)"})
        sampler.start()
        result = asyncio.run(_prepare_and_seed(args, counts, dx_url)) or {}
        size_before = db_size(args.postgres, prefect_db) if prefect_db else None
        counter = ApiCounter(api)

        from patient_docs.runner import environment, prepare, run_patients

        if args.dask == "external":
            from patient_docs.cluster import dask_processes

            address = stack.enter_context(dask_processes(1, get_settings(), directory=tmp))
            os.environ["PATIENT_DOCS_DASK_ADDRESS"] = address
            get_settings.cache_clear()
        with environment() as settings:
            asyncio.run(prepare(settings))
            ids = [f"bf-{i:05d}" for i in range(args.patients)]
            done = [0]

            def on_done(outcome) -> None:
                done[0] += 1
                if done[0] % max(1, args.patients // 20) == 0 or not outcome.ok:
                    print(f"  [{time.monotonic() - began:7.1f} s] {done[0]}/{args.patients} "
                          f"{outcome.patient_id} {outcome.state} {outcome.message[:120]}", flush=True)

            began, began_wall = time.monotonic(), time.time()
            outcomes = asyncio.run(run_patients(ids, priority=0, max_concurrent=args.max_concurrent, on_done=on_done))
            makespan = time.monotonic() - began
            sampler.sample()
        sampler.stop_event.set()
        size_after = db_size(args.postgres, prefect_db) if prefect_db else None
        import httpx

        stats = httpx.get(f"{dx_url}/_sim/stats").json()
        tt_stats = httpx.get(f"{tt_url}/_sim/stats").json()

        from patient_docs.activity_log import read_rows
        from patient_docs.audit import audit

        settings = get_settings()
        rows = read_rows(csv)
        report = audit(csv, settings)
        use = slot_use(rows, settings.worker_threads)
        use_submitted = slot_use(rows, settings.worker_threads, "submitted")
        gap = transfer_gaps(rows)
        marks = milestones(rows, began_wall)
        steps, waits = step_means(rows), slot_waits(rows)
        requests = defaultdict(int)
        for row in rows:
            if row.activity == "request" and row.event == "start":
                requests[row.args.get("budget")] += 1
        log_errors = server_log_errors(tmp / "prefect" / "server.log")

    # ------------------------------------------------------------ figures
    n, total_files = args.patients, sum(counts)
    budget = settings.docexchange_transfer_limit
    transfer_bound = 2 * n / budget.count * budget.window
    conversion_bound = total_files * settings.conversion_seconds * args.scale / settings.worker_threads
    bound = max(transfer_bound, conversion_bound)
    binds = "transfer" if transfer_bound >= conversion_bound else "conversion"
    not_ok = [o for o in outcomes if not o.ok]
    crashed = [o for o in outcomes if o.state == "Crashed"]
    rejected = {f"docexchange.{k}": v["rejected"] for k, v in stats["budgets"].items()}
    rejected |= {f"tasktracker.{k}": v["rejected"] for k, v in tt_stats["budgets"].items()}
    violations = sum(rejected.values()) + sum(b.exceeded for b in report.budgets)
    wrong_docs = [o for o, c in zip(outcomes, counts) if o.ok and o.documents != c]

    print(f"command: {' '.join(['benchmarks/backfill.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"patients {n}, files {total_files} (max {max(counts)}; >=100: {sum(c >= 100 for c in counts)}, "
          f">=2500: {sum(c >= 2500 for c in counts)}); scale {args.scale}; transfer budget {budget}; "
          f"prefect db {args.prefect_db}; patients db {args.patients_db}; max_concurrent {args.max_concurrent}; "
          f"dask {args.dask}")
    print(f"makespan {makespan:.1f} s")
    print(f"lower bound {bound:.1f} s ({binds} binds): transfer 2*{n}/{budget.count}*{budget.window:g} = "
          f"{transfer_bound:.1f} s, conversion {total_files}*{settings.conversion_seconds:g}*{args.scale:g}/"
          f"{settings.worker_threads} = {conversion_bound:.1f} s")
    print(f"ratio makespan/bound {makespan / bound:.3f} (goal <= {GOALS['ratio']})")
    u = use["use"]
    print(f"conversion-slot use while files waited: {'-' if u is None else f'{u:.1%}'} over {use['queued_s']:.1f} s "
          f"queued ({use['conversions']} conversions) (goal >= 95 %)")
    us = use_submitted["use"]
    print(f"  same, counting a file as waiting only once submitted to Dask (after create_entry): "
          f"{'-' if us is None else f'{us:.1%}'} over {use_submitted['queued_s']:.1f} s")
    print("milestones, s after run_patients (first .. last): " + "; ".join(
        f"{k} {a:.1f}..{b:.1f}" for k, (a, b) in marks.items()))
    print("mean step seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
          + f" (sum {sum(steps.values()):.1f})")
    print("median wait from step start to request send: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(waits.items())))
    print(f"requests per budget: {dict(requests)} = {sum(requests.values()) / makespan:.2f}/s")
    print(f"transfer requests: {report.budgets[0].requests}, longest gap between transfer sends {gap:.2f} s "
          f"(window {budget.window:g} s); audit steady use "
          f"{'-' if report.budgets[0].steady_use is None else f'{report.budgets[0].steady_use:.3f}'}")
    print(f"outcomes: {len(outcomes) - len(not_ok)} Completed, {len(not_ok)} not ({len(crashed)} Crashed); "
          f"wrong document counts {len(wrong_docs)}")
    for o in not_ok[:10]:
        print(f"  {o.patient_id} {o.state}: {o.message[:200]}")
    errors = len(crashed) + log_errors + counter.errors5xx
    print(f"Prefect API errors: {errors} (crashed runs {len(crashed)}, 5xx in server log {log_errors}, "
          f"5xx seen by this process {counter.errors5xx})")
    print(f"violations: {violations} (simulator rejected {rejected}; audit exceeded "
          f"{[b.name for b in report.budgets if b.exceeded]}; max in window "
          f"{ {b.name: b.max_in_window for b in report.budgets} })")
    print(f"Prefect API calls from the orchestrator: {counter.calls} = {counter.calls / n:.1f}/patient, "
          f"{counter.calls / makespan:.1f}/s, mean latency {counter.seconds / max(1, counter.calls) * 1000:.0f} ms; "
          f"slot broker {counter.broker_calls} calls, mean {counter.broker_seconds / max(1, counter.broker_calls) * 1000:.0f} ms, "
          f"call time {counter.broker_seconds / makespan:.0%} of the makespan (writes one at a time; marker reads beside them)")
    if size_before is not None:
        print(f"Prefect PostgreSQL DB: {size_before / 2**20:.1f} MiB -> {size_after / 2**20:.1f} MiB = "
              f"{(size_after - size_before) / n / 1024:.1f} KiB/patient")
    print(f"peak RSS per process ({sampler.samples} samples, 1 s):")
    for (pid, label), rss in sorted(sampler.peak.items(), key=lambda kv: -kv[1]):
        print(f"  {pid:>7} {label:<48} {rss / 2**20:8.1f} MiB")
    print(f"peak orchestrating total (Prefect server, orchestrator, Dask scheduler; not the simulators and the "
          f"Dask workers) {sampler.peak_total / 2**20:.1f} MiB = {sampler.peak_total / 1e6:.0f} MB (goal <= 1000 MB); "
          f"with the Dask worker processes {sampler.peak_with_workers / 2**20:.1f} MiB = {sampler.peak_with_workers / 1e6:.0f} MB")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not not_ok else 1


async def _prepare_and_seed(args, counts: list[int], dx_url: str) -> dict:
    import httpx

    from patient_docs import clients
    from patient_docs.models import PatientNames
    from patient_docs.settings import get_settings

    settings = get_settings()
    patients = [PatientNames(patient_id=f"bf-{i:05d}", first_name=f"First{i:05d}", last_name=f"Last{args.seed}x{i:05d}")
                for i in range(args.patients)]
    store = clients.patients(settings)
    await store.create_schema()
    await store.upsert_patients(patients)
    async with httpx.AsyncClient(base_url=dx_url, timeout=30) as client:
        for p, files in zip(patients, counts):
            r = await client.post("/_sim/patients", json={"first_name": p.first_name, "last_name": p.last_name,
                                                          "files": files})
            r.raise_for_status()
    return {}


if __name__ == "__main__":
    sys.exit(main())
