"""Exact, global request budgets on top of Prefect global concurrency limits."""

from patient_docs.limits.budgets import LIMITS, budget_for
from patient_docs.limits.slot import budget_slot

__all__ = ["LIMITS", "budget_for", "budget_slot"]
