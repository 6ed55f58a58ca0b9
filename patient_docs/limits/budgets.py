"""The three named Prefect limits and the settings they come from; `limits apply` writes them."""

from __future__ import annotations

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from patient_docs.limits.priority import MARKER_SLOTS, marker_name
from patient_docs.settings import Budget, Settings

TRANSFER = "docexchange-search"  # searches and downloads share DocumentExchange's transfer budget
POLL = "docexchange-poll"
TASKTRACKER = "tasktracker"

LIMITS: dict[str, str] = {
    TRANSFER: "docexchange_transfer_limit",
    POLL: "docexchange_poll_limit",
    TASKTRACKER: "tasktracker_limit",
}


def budget_for(name: str, settings: Settings) -> Budget:
    return getattr(settings, LIMITS[name])


async def apply_limits(client: PrefectClient, settings: Settings) -> dict[str, Budget]:
    """Create or update the named limits: N slots, no decay, active. Safe to run again."""
    applied = {}
    for name in LIMITS:
        budget = budget_for(name, settings)
        # Slots are plain concurrency slots (decay 0): our slot holder keeps each one until a full
        # window has passed since its request's response, which makes the budget exact.
        await client.upsert_global_concurrency_limit_by_name(name, budget.count, slot_decay_per_second=0.0)
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True))
        # Companion limit counting processes with high-priority waiters (see limits/priority.py).
        await client.upsert_global_concurrency_limit_by_name(marker_name(name), MARKER_SLOTS, slot_decay_per_second=0.0)
        applied[name] = budget
    return applied
