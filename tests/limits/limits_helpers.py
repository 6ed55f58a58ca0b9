"""Helpers for tests/limits: simulators, a Prefect client on our server, bursts of worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

WORKER = Path(__file__).with_name("_worker.py")


@contextmanager
def simulators(settings):
    """Both simulators with these settings (budgets, latency) on loopback ports."""
    from patient_docs.simulators.server import run_simulators

    with run_simulators(settings) as sims:
        yield sims


@asynccontextmanager
async def prefect_client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        async with get_client() as client:
            yield client


async def apply(api: str, settings) -> None:
    from patient_docs.limits.budgets import apply_limits

    async with prefect_client(api) as client:
        await apply_limits(client, settings)


def run_bursts(env: dict[str, str], processes: int, requests: int) -> list[dict]:
    """Start `processes` workers at once, each sending `requests` concurrent searches; their summaries."""
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "burst", str(requests)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries
