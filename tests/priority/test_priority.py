"""Priority at the named limits (issue 7): in one process, across processes, no starvation, and on Dask.

Windows are small (0.5-1 s) so every test runs in seconds. Waiting for a state owned by another
thread or process is a bounded readiness poll of that state, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest

from patient_docs.limits.budgets import POLL, TASKTRACKER, TRANSFER

HIGH_PRIORITY, LOW_PRIORITY = 10, 0


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def waiters(settings) -> int:
    from patient_docs.limits.broker import get_broker

    limit = get_broker(settings)._limits.get(TRANSFER)
    return len(limit.waiters) if limit else 0


async def test_high_priority_waiter_gets_the_next_slot_in_one_process(prio_env):
    """All slots held, four low-priority waiters queued, then one high: the high one is served next,
    the low ones after it in arrival order."""
    from patient_docs.limits.slot import budget_slot

    settings, _ = prio_env(docexchange_transfer_limit="2/1s")
    order: list[str] = []
    held, release = asyncio.Event(), asyncio.Event()
    holding = 0

    async def holder(i: int) -> None:
        nonlocal holding
        async with budget_slot(TRANSFER, settings, patient_id=f"holder-{i}"):
            holding += 1
            if holding == 2:
                held.set()
            await release.wait()

    async def waiter(label: str, priority: int) -> None:
        async with budget_slot(TRANSFER, settings, patient_id=label, priority=priority):
            order.append(label)

    holders = [asyncio.create_task(holder(i)) for i in range(2)]
    await held.wait()
    lows = []
    for i in range(4):  # queued one by one, so their arrival order is defined
        lows.append(asyncio.create_task(waiter(f"low-{i}", LOW_PRIORITY)))
        await until(lambda: waiters(settings) == i + 1)
    high = asyncio.create_task(waiter("high", HIGH_PRIORITY))
    await until(lambda: waiters(settings) == 5)
    assert order == []  # nobody got a slot while both were held
    release.set()
    await asyncio.gather(*holders, *lows, high)
    assert order[0] == "high", order
    assert order == ["high", "low-0", "low-1", "low-2", "low-3"]


async def test_a_saturating_backfill_frees_a_slot_every_slot_interval(prio_env):
    """Pacing: twelve low-priority requesters, started in one burst, keep a 4/2s budget saturated.
    A high-priority waiter queued right after a low-priority grant is served within one slot interval
    (window/count = 0.5 s, plus round trips), not after most of a window, which is what it waits when
    the burst's four slots all come back together. Five times; the budget is never exceeded."""
    from patient_docs.activity_log import read_rows
    from patient_docs.audit import _audit_budget, request_intervals
    from patient_docs.limits.slot import budget_slot

    settings, _ = prio_env(docexchange_transfer_limit="4/2s")
    window, count = 2.0, 4
    grants: list[float] = []
    stop = asyncio.Event()

    async def low(i: int) -> None:
        while not stop.is_set():
            async with budget_slot(TRANSFER, settings, patient_id=f"low-{i}", priority=LOW_PRIORITY):
                grants.append(time.monotonic())

    lows = [asyncio.create_task(low(i)) for i in range(12)]
    await until(lambda: len(grants) >= 2 * count)  # past the first window
    waits = []
    for k in range(5):
        seen = len(grants)
        await until(lambda: len(grants) > seen)  # just after a low-priority grant
        queued = time.monotonic()
        async with budget_slot(TRANSFER, settings, patient_id=f"high-{k}", priority=HIGH_PRIORITY):
            waits.append(time.monotonic() - queued)
    stop.set()
    await asyncio.gather(*lows)

    assert max(waits) <= window / count + 0.4, waits
    intervals, _ = request_intervals(read_rows(settings.activity_log), settings.request_timeout)
    audit = _audit_budget(TRANSFER, settings.docexchange_transfer_limit, intervals[TRANSFER])
    assert audit.max_in_window <= count, audit


# limit -> (its budget setting, the simulator and budget that count its requests)
LIMIT_BUDGETS = {
    TRANSFER: ("docexchange_transfer_limit", "docexchange", "transfer"),
    POLL: ("docexchange_poll_limit", "docexchange", "poll"),
    TASKTRACKER: ("tasktracker_limit", "tasktracker", "tasktracker"),
}


@pytest.mark.parametrize("limit", list(LIMIT_BUDGETS))
def test_high_priority_in_another_process_is_served_next(prio_env, limit):
    """At each named limit: process A holds the only slot (1/1s) and queues four low-priority waiters;
    once A waits, process B queues one high-priority waiter. When A's held slot comes back, B's request
    is the next one sent — A does not hand the slot on to its own low waiters — and the simulator saw no
    violation of the budget (nor does the audit of the activity CSV)."""
    import httpx
    import prio_workers

    from patient_docs.activity_log import read_rows
    from patient_docs.audit import audit
    from patient_docs.simulators.server import run_simulators

    setting, service, budget = LIMIT_BUDGETS[limit]
    values = {setting: "1/1s", "sim_latency_min": 0.005, "sim_latency_max": 0.02}
    settings, _ = prio_env(**values)
    with run_simulators(settings) as sims:
        settings, env = prio_env(**values, docexchange_url=sims.docexchange_url, tasktracker_url=sims.tasktracker_url)
        # The job the status polls ask about (one search, outside the test's budget).
        job_id = httpx.post(f"{sims.docexchange_url}/v1/searches",
                            json={"first_name": "Polled", "last_name": "Job"}).json()["job_id"]
        ctx = mp.get_context("spawn")
        a_waiting, b_marked, out = ctx.Event(), ctx.Event(), ctx.Queue()
        a = ctx.Process(target=prio_workers.low_process, args=(env, limit, job_id, 4, a_waiting, b_marked, out))
        b = ctx.Process(target=prio_workers.high_process, args=(env, limit, job_id, a_waiting, b_marked, out))
        a.start()
        b.start()
        try:
            results = dict(out.get(timeout=120) for _ in range(2))
        finally:
            for proc in (a, b):
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
        assert a.exitcode == 0 and b.exitcode == 0
        app = sims.docexchange_app if service == "docexchange" else sims.tasktracker_app
        stats = app.state.sim.stats()["budgets"][budget]

    acquired = sorted(results["A"]["acquired"] + results["B"]["acquired"], key=lambda item: item[1])
    assert [who for who, _ in acquired][:2] == ["A-holder", "B-high"], acquired
    assert len(acquired) == 6
    # The CSV agrees: request rows in the order they were sent.
    sent = [row.patient_id for row in read_rows(settings.activity_log) if row.activity == "request" and row.event == "start"]
    assert sent[:2] == ["A-holder", "B-high"], sent
    assert sorted(sent[2:]) == [f"A-low-{i}" for i in range(4)]
    assert stats["rejected"] == 0 and stats["max_in_any_window"] <= 1, stats
    report = audit(settings.activity_log, settings)
    assert not report.exceeded, report


async def test_low_priority_waiter_is_not_starved(prio_env, monkeypatch):
    """Rule (anti-starvation): a low-priority waiter queued longer than `priority_aging_windows` x the
    limit's window counts as high priority, ordered by its arrival among the high waiters. So with a
    steady trickle of high-priority waiters (one always queued) it is served within aging time + one
    window (+ slack for the round trips), and, as the trickle never lets it in before, not earlier than
    the aging time. Here: 1 slot per 0.5 s, PATIENT_DOCS_PRIORITY_AGING_WINDOWS=2, aging 1 s."""
    from patient_docs.limits.slot import budget_slot

    monkeypatch.setenv("PATIENT_DOCS_PRIORITY_AGING_WINDOWS", "2")
    settings, _ = prio_env(docexchange_transfer_limit="1/0.5s")
    assert settings.priority_aging_windows == 2
    window, aging = 0.5, 2 * 0.5
    grants: list[tuple[str, float]] = []
    low_served = asyncio.Event()
    first_high = asyncio.Event()

    async def trickle() -> None:
        n = 0
        while not low_served.is_set():  # the next high waiter queues the moment the previous one is served
            async with budget_slot(TRANSFER, settings, patient_id=f"high-{n}", priority=HIGH_PRIORITY):
                grants.append((f"high-{n}", time.monotonic()))
                first_high.set()
            n += 1

    async def low() -> None:
        async with budget_slot(TRANSFER, settings, patient_id="low", priority=LOW_PRIORITY):
            grants.append(("low", time.monotonic()))
            low_served.set()

    stream = asyncio.create_task(trickle())
    await first_high.wait()
    queued = time.monotonic()
    low_task = asyncio.create_task(low())
    served, _ = await asyncio.wait([low_task], timeout=aging + window + 5)
    waited = time.monotonic() - queued
    low_served.set()  # stops the trickle either way
    stopped, _ = await asyncio.wait([stream], timeout=2 * window + 5)
    for task in (low_task, stream):
        task.cancel()
    assert stopped, f"the high-priority trickle itself stalled (a waiter left unserved); grants {grants}"
    assert served, f"low-priority waiter starved: not served within {waited:.1f} s; grants {grants}"
    highs_before = [name for name, at in grants if name.startswith("high") and queued < at <= queued + waited]
    # the trickle really kept it waiting: a high waiter took the slot that freed before aging ran out
    assert len(highs_before) >= 1, grants
    assert aging - 0.05 <= waited <= aging + window + 0.5, (waited, grants)


def test_dask_high_priority_conversions_overtake_queued_low_ones():
    """One worker with resources CPU=2, twelve queued low-priority CPU=1 tasks; once two of them run
    (both CPU units taken, as reported through a distributed Queue), three high-priority tasks are
    submitted: all three start before every low task that was still queued."""
    from distributed import Client, LocalCluster, Queue

    def work(label: str, seconds: float) -> tuple[str, float]:
        started = time.time()
        Queue("starts").put(label)
        time.sleep(seconds)  # the simulated conversion itself
        return label, started

    with LocalCluster(n_workers=1, threads_per_worker=2, resources={"CPU": 2}, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        starts = Queue("starts")
        lows = client.map(work, [f"low-{i}" for i in range(12)], [0.5] * 12, resources={"CPU": 1},
                          priority=LOW_PRIORITY, pure=False)
        running = {starts.get(timeout=60), starts.get(timeout=60)}  # both CPU units busy
        highs = client.map(work, [f"high-{i}" for i in range(3)], [0.5] * 3, resources={"CPU": 1},
                           priority=HIGH_PRIORITY, pure=False)
        started = dict(client.gather(lows + highs))

    order = sorted(started, key=started.get)
    assert set(order[:2]) == running, order
    assert sorted(order[2:5]) == ["high-0", "high-1", "high-2"], order  # before the ten queued low ones
