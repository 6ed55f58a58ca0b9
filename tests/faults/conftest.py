"""Fault tests: faults never leak from one test into the next (modules use `clean_faults`)."""

from __future__ import annotations

import pytest


@pytest.fixture
def clean_faults(stack):
    """Every fault test starts and ends with no outage and no random 503s on either simulator."""
    sims = (stack.docexchange_app.state.sim, stack.tasktracker_app.state.sim)
    for sim in sims:
        sim.faults.clear()
    yield
    for sim in sims:
        sim.faults.clear()
