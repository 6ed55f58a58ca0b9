"""Spawned processes for tests/priority (not a test module): a low-priority and a high-priority requester.

Each process builds its own slot broker from the environment it is given, sends real searches to
the DocumentExchange simulator through `budget_slot`, and reports through multiprocessing queues.
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


def low_process(env: dict, lows: int, a_waiting, go, out) -> None:
    """Hold the limit's only slot, queue `lows` low-priority waiters, say so, send everything once `go` is set."""
    os.environ.update(env)
    from patient_docs import clients
    from patient_docs.limits.broker import get_broker, reset_broker
    from patient_docs.limits.budgets import TRANSFER
    from patient_docs.limits.slot import budget_slot
    from patient_docs.settings import Settings

    async def main() -> dict:
        settings = Settings()
        broker = get_broker(settings)
        acquired: list[tuple[str, float]] = []
        held = asyncio.Event()
        async with clients.docexchange(settings) as dx:

            async def holder() -> None:
                async with budget_slot(TRANSFER, settings, patient_id="A-holder", priority=0):
                    acquired.append(("A-holder", time.time()))
                    held.set()
                    await asyncio.to_thread(go.wait, 60)
                    await dx.start_search("Holder", "A")

            async def low(i: int) -> None:
                async with budget_slot(TRANSFER, settings, patient_id=f"A-low-{i}", priority=0):
                    acquired.append((f"A-low-{i}", time.time()))
                    await dx.start_search(f"Low{i}", "A")

            tasks = [asyncio.create_task(holder())]
            await held.wait()
            calls = broker.api_calls
            tasks += [asyncio.create_task(low(i)) for i in range(lows)]
            # Waiting for real: every low waiter queued and at least one of their attempts refused.
            await _until(lambda: len(broker._limits[TRANSFER].waiters) == lows and broker.api_calls > calls + 1)
            a_waiting.set()
            await asyncio.gather(*tasks)
        return {"acquired": acquired}

    result = asyncio.run(main())
    reset_broker(wait=True)
    out.put(("A", result))


def high_process(env: dict, a_waiting, b_marked, out) -> None:
    """Once A waits, queue one high-priority waiter; report when its marker is raised."""
    os.environ.update(env)
    from patient_docs import clients
    from patient_docs.limits.broker import get_broker, reset_broker
    from patient_docs.limits.budgets import TRANSFER
    from patient_docs.limits.slot import budget_slot
    from patient_docs.settings import Settings

    async def main() -> dict:
        settings = Settings()
        broker = get_broker(settings)
        acquired: list[tuple[str, float]] = []
        await asyncio.to_thread(a_waiting.wait, 120)
        async with clients.docexchange(settings) as dx:

            async def high() -> None:
                async with budget_slot(TRANSFER, settings, patient_id="B-high", priority=10):
                    acquired.append(("B-high", time.time()))
                    await dx.start_search("High", "B")

            task = asyncio.create_task(high())
            queued = time.time()
            await _until(lambda: TRANSFER in broker._markers._held or task.done())
            b_marked.set()
            await task
        return {"acquired": acquired, "queued": queued}

    result = asyncio.run(main())
    reset_broker(wait=True)
    out.put(("B", result))
