"""The budget claim, end to end: N slots held until response + W never let N+1 requests share a window W."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from patient_docs.audit import audit
from patient_docs.limits.budgets import POLL, TASKTRACKER, TRANSFER
from limits_helpers import WORKER, apply, prefect_client, run_bursts, simulators


def check_budget(sims, settings, arrivals: int, count: int) -> None:
    stats = sims.docexchange_app.state.sim.stats()["budgets"]["transfer"]
    assert stats["arrivals"] == arrivals, stats
    assert stats["rejected"] == 0, stats
    assert stats["max_in_any_window"] <= count, stats
    report = audit(settings.activity_log, settings)
    transfer = next(item for item in report.budgets if item.name == TRANSFER)
    assert transfer.requests == arrivals and not transfer.exceeded, transfer
    assert not report.exceeded


def run_contention(limits_api, limits_env, *, latency: tuple[float, float], processes: int, requests: int) -> list[dict]:
    base, _ = limits_env(docexchange_transfer_limit="5/1s", sim_latency_min=latency[0], sim_latency_max=latency[1])
    with simulators(base) as sims:
        settings, env = limits_env(
            docexchange_transfer_limit="5/1s", sim_latency_min=latency[0], sim_latency_max=latency[1],
            docexchange_url=sims.docexchange_url,
        )
        asyncio.run(apply(limits_api, settings))
        summaries = run_bursts(env, processes, requests)
        for summary in summaries:
            assert summary["outcomes"] == {"ok": requests}, summaries
        check_budget(sims, settings, processes * requests, 5)
    return summaries


def test_exact_under_contention_from_several_processes(limits_api, limits_env):
    """3 processes x 15 concurrent requests, budget 5/1s, latency 5-50 ms each way: no window over 5."""
    summaries = run_contention(limits_api, limits_env, latency=(0.005, 0.05), processes=3, requests=15)
    assert all(summary["api_calls"] >= 1 for summary in summaries)


def test_a_busy_process_hands_slots_on_without_asking_the_server(limits_api, limits_env):
    """One process, 40 queued requests on 5/1s: after its first five grants the broker passes each slot
    whose window has passed to the next waiter itself, so the Prefect API sees fewer calls than requests
    (at least two per request, 130 in all, when every slot went back to the server), and no window over 5."""
    [summary] = run_contention(limits_api, limits_env, latency=(0.005, 0.05), processes=1, requests=40)
    assert summary["api_calls"] < 40, summary


def test_latency_jitter_cannot_bunch_arrivals(limits_api, limits_env):
    """0-300 ms each way: a request sent later may arrive earlier, still no window over 5."""
    run_contention(limits_api, limits_env, latency=(0.0, 0.3), processes=3, requests=10)


async def test_priority_within_a_process(limits_api, limits_env):
    """With the only slot held, the high-priority waiter queued last is served before earlier low ones."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from patient_docs.limits.broker import SlotBroker

    settings, _ = limits_env(tasktracker_limit="1/1s")
    await apply(limits_api, settings)
    with temporary_settings(updates={PREFECT_API_URL: limits_api}):
        broker = SlotBroker(settings)
    try:
        held = await broker.acquire(TASKTRACKER)
        served: list[str] = []

        async def wait(label: str, priority: int) -> None:
            lease = await broker.acquire(TASKTRACKER, priority)
            served.append(label)
            lease.release_after(0)

        tasks = [asyncio.create_task(wait(f"low{i}", 0)) for i in range(3)]
        tasks.append(asyncio.create_task(wait("high", 5)))
        await asyncio.sleep(0)  # one turn: each task has handed its request to the broker loop, in order
        held.release_after(0)  # scheduled on the broker loop after the four enqueues
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert served == ["high", "low0", "low1", "low2"]
        # The slot went from waiter to waiter without an acquisition each: an acquisition and a marker
        # read for the held slot, one attempt while it was held, then at most a marker read per
        # low-priority hand-on (paced apart, so each reads afresh); an acquisition per waiter would
        # be 11 calls or more.
        assert broker.api_calls <= 6, broker.api_calls
    finally:
        broker.drain(30)
        broker._loop.call_soon_threadsafe(broker._stop.set)
        broker._thread.join(10)


async def test_reset_broker_hands_held_leases_over_to_the_server(limits_api, limits_env, monkeypatch):
    """reset_broker(): a slot still waiting out its window is renewed for (at least) the time left, stays
    taken on the server after the broker is gone (its expiry then frees it: see the killed-holder test)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import patient_docs.limits.broker as broker_module
    from patient_docs.limits.broker import SlotBroker, reset_broker

    # 90 s left is more than the broker waits out at exit (60 s): this slot is handed over.
    settings, _ = limits_env(docexchange_poll_limit="1/90s")
    await apply(limits_api, settings)
    with temporary_settings(updates={PREFECT_API_URL: limits_api}):
        broker = SlotBroker(settings)
    monkeypatch.setattr(broker_module, "_broker", broker)
    renewals: list[tuple[object, float]] = []
    renew = broker._client.renew_concurrency_lease

    async def observed_renew(lease_id, lease_duration):
        renewals.append((lease_id, lease_duration))
        return await renew(lease_id, lease_duration)

    monkeypatch.setattr(broker._client, "renew_concurrency_lease", observed_renew)

    lease = await broker.acquire(POLL)
    lease.release_after(90)  # as budget_slot does after the response: hold for a full window
    await asyncio.wrap_future(broker._call_soon(asyncio.sleep(0)))  # the release is scheduled before this
    assert lease.lease_id in broker._holding
    handed_at = time.monotonic()
    reset_broker()
    assert broker_module._broker is None and not broker._thread.is_alive()
    assert [lid for lid, _ in renewals] == [lease.lease_id]
    assert renewals[0][1] >= max(60.0, lease.release_at - handed_at)

    async with prefect_client(limits_api) as client:
        limit = await client.read_global_concurrency_limit_by_name(POLL)
        assert limit.active_slots == 1  # not lost: the server still counts it as taken
        await client.release_concurrency_slots_with_lease(lease.lease_id)  # clean up for later tests
        limit = await client.read_global_concurrency_limit_by_name(POLL)
        assert limit.active_slots == 0


async def test_reset_broker_waits_out_a_slot_that_is_nearly_free(limits_api, limits_env, monkeypatch):
    """A hold with little time left is released at its time, not handed over: a 60 s lease (Prefect's
    minimum) would idle it for a minute."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import patient_docs.limits.broker as broker_module
    from patient_docs.limits.broker import SlotBroker, reset_broker

    settings, _ = limits_env(docexchange_poll_limit="1/2s")
    await apply(limits_api, settings)
    with temporary_settings(updates={PREFECT_API_URL: limits_api}):
        broker = SlotBroker(settings)
    monkeypatch.setattr(broker_module, "_broker", broker)
    lease = await broker.acquire(POLL)
    lease.release_after(2)
    await asyncio.wrap_future(broker._call_soon(asyncio.sleep(0)))
    reset_broker()
    assert time.monotonic() >= lease.release_at  # it waited for the window, not less
    async with prefect_client(limits_api) as client:
        assert (await client.read_global_concurrency_limit_by_name(POLL)).active_slots == 0


@pytest.mark.slow
async def test_killed_holder_slot_comes_back_only_after_its_window(limits_api, limits_env):
    """SIGKILL a holder mid-request on a 1-slot limit: nobody gets the slot before kill + W; the lease
    expiry gives it back within lease (>= 60 s) + repossessor loop (1 s) + polling."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from patient_docs.limits.broker import SlotBroker

    window = 2.0
    base, _ = limits_env(docexchange_transfer_limit="1/2s")
    with simulators(base) as sims:
        sim = sims.docexchange_app.state.sim
        settings, env = limits_env(docexchange_transfer_limit="1/2s", docexchange_url=sims.docexchange_url)
        await apply(limits_api, settings)
        sim.faults.set_outage("hang", 600, path_prefix="/v1/searches", hang_seconds=600)
        arrived = threading.Event()
        transfer = sim.windows["transfer"]
        hit = transfer.hit

        def observed_hit(now=None):  # observe only: the simulator's verdict is unchanged
            allowed = hit(now)
            arrived.set()
            return allowed

        transfer.hit = observed_hit
        holder = subprocess.Popen([sys.executable, str(WORKER), "hold"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "SENDING", holder.stderr.read()[-3000:]
            assert await asyncio.to_thread(arrived.wait, 30), "the held request never arrived"
            holder.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.to_thread(holder.wait, 10)
        finally:
            if holder.poll() is None:
                holder.kill()
        sim.faults.clear()

        with temporary_settings(updates={PREFECT_API_URL: limits_api}):
            broker = SlotBroker(settings)
        try:
            lease = await asyncio.wait_for(broker.acquire(TRANSFER), broker._lease_duration(TRANSFER) + 30)
            granted_at = time.monotonic()
            lease.release_after(0)
        finally:
            broker.drain(30)
            broker._loop.call_soon_threadsafe(broker._stop.set)
            broker._thread.join(10)
    waited = granted_at - killed_at
    assert waited >= window, f"slot reused {waited:.2f} s after the kill, before a full window"
    # Lease (60 s from the acquisition, before the kill) + repossessor loop 1 s + broker polling.
    assert waited <= broker._lease_duration(TRANSFER) + 10, f"slot came back only after {waited:.1f} s"
