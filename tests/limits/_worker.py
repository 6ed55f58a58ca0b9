"""A separate process holding slots through `budget_slot`, driven by tests/limits (not a test module).

    python _worker.py burst N   # N concurrent searches through the transfer budget; print a JSON summary
    python _worker.py hold      # one search inside one slot; print SENDING first; the test kills us
"""

from __future__ import annotations

import asyncio
import json
import sys

from patient_docs import clients
from patient_docs.limits.broker import get_broker, reset_broker
from patient_docs.limits.budgets import TRANSFER
from patient_docs.limits.slot import budget_slot
from patient_docs.settings import Settings


async def burst(count: int) -> dict:
    settings = Settings()
    outcomes: dict[str, int] = {}

    async with clients.docexchange(settings) as dx:

        async def one(i: int) -> None:
            async with budget_slot(TRANSFER, settings, patient_id=f"w{i}", attempt=i):
                try:
                    await dx.start_search(f"First{i}", f"Last{i}")
                    outcome = "ok"
                except Exception as exc:  # noqa: BLE001 - reported to the test
                    outcome = type(exc).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        await asyncio.gather(*(one(i) for i in range(count)))
    return {"outcomes": outcomes, "api_calls": get_broker(settings).api_calls}


async def hold() -> None:
    settings = Settings()
    async with clients.docexchange(settings) as dx:
        async with budget_slot(TRANSFER, settings, patient_id="holder"):
            print("SENDING", flush=True)
            await dx.start_search("Held", "Holder")  # the simulator hangs it; we are killed meanwhile


if __name__ == "__main__":
    if sys.argv[1] == "burst":
        summary = asyncio.run(burst(int(sys.argv[2])))
        reset_broker(wait=True)  # every slot back after its window, so the next test starts clean
        print(json.dumps(summary), flush=True)
    else:
        asyncio.run(hold())
