"""Spawned processes for tests/priority (not a test module): a low-priority and a high-priority requester.

Each process builds its own slot broker from the environment it is given, sends real requests of
one named limit (searches, status polls or TaskTracker entries) to the simulators through
`budget_slot`, and reports through multiprocessing queues.
"""

from __future__ import annotations

import asyncio
import os
import time


async def _until(condition, timeout: float = 30.0) -> None:
    """Wait for a condition owned by another thread (the broker's); a bounded readiness poll."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def _send(limit: str, settings, label: str, job_id: str) -> None:
    """One request that spends a slot of `limit`."""
    from patient_docs import clients
    from patient_docs.limits.budgets import POLL, TASKTRACKER, TRANSFER

    if limit == TRANSFER:
        async with clients.docexchange(settings) as dx:
            await dx.start_search(label, "Priority")
    elif limit == POLL:
        async with clients.docexchange(settings) as dx:
            await dx.job(job_id)
    elif limit == TASKTRACKER:
        async with clients.tasktracker(settings) as tt:
            await tt.create_task(label, label, "Priority", idempotency_key=label)
    else:
        raise ValueError(limit)


def low_process(env: dict, limit: str, job_id: str, lows: int, a_waiting, go, out) -> None:
    """Hold the limit's only slot, queue `lows` low-priority waiters, say so, send everything once `go` is set."""
    os.environ.update(env)
    from patient_docs.limits.broker import get_broker, reset_broker
    from patient_docs.limits.slot import budget_slot
    from patient_docs.settings import Settings

    async def main() -> dict:
        settings = Settings()
        broker = get_broker(settings)
        acquired: list[tuple[str, float]] = []
        held = asyncio.Event()

        async def holder() -> None:
            async with budget_slot(limit, settings, patient_id="A-holder", priority=0):
                acquired.append(("A-holder", time.time()))
                held.set()
                await asyncio.to_thread(go.wait, 60)
                await _send(limit, settings, "A-holder", job_id)

        async def low(i: int) -> None:
            async with budget_slot(limit, settings, patient_id=f"A-low-{i}", priority=0):
                acquired.append((f"A-low-{i}", time.time()))
                await _send(limit, settings, f"A-low-{i}", job_id)

        tasks = [asyncio.create_task(holder())]
        await held.wait()
        tasks += [asyncio.create_task(low(i)) for i in range(lows)]
        # Waiting for real: every low waiter queued behind the held slot (the broker knows the only
        # slot is its own, so it asks the server again only when that slot comes back).
        await _until(lambda: len(broker._limits[limit].waiters) == lows)
        a_waiting.set()
        await asyncio.gather(*tasks)
        return {"acquired": acquired}

    result = asyncio.run(main())
    reset_broker(wait=True)
    out.put(("A", result))


def high_process(env: dict, limit: str, job_id: str, a_waiting, b_marked, out) -> None:
    """Once A waits, queue one high-priority waiter; report when its marker is raised."""
    os.environ.update(env)
    from patient_docs.limits.broker import get_broker, reset_broker
    from patient_docs.limits.slot import budget_slot
    from patient_docs.settings import Settings

    async def main() -> dict:
        settings = Settings()
        broker = get_broker(settings)
        acquired: list[tuple[str, float]] = []
        await asyncio.to_thread(a_waiting.wait, 120)

        async def high() -> None:
            async with budget_slot(limit, settings, patient_id="B-high", priority=10):
                acquired.append(("B-high", time.time()))
                await _send(limit, settings, "B-high", job_id)

        task = asyncio.create_task(high())
        queued = time.time()
        await _until(lambda: limit in broker._markers._held or task.done())
        b_marked.set()
        await task
        return {"acquired": acquired, "queued": queued}

    result = asyncio.run(main())
    reset_broker(wait=True)
    out.put(("B", result))
