"""Fixtures for the activity log, audit and timeline tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from patient_docs.activity_log import ActivityRow
from patient_docs.settings import Budget, Settings

BASE = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)



def at(seconds: float) -> str:
    """A log timestamp `seconds` after BASE, rounded to the microsecond."""
    return (BASE + timedelta(microseconds=round(seconds * 1_000_000))).isoformat(timespec="microseconds")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings writing the activity log under tmp_path, with a 10/60s transfer budget."""
    return Settings(
        _env_file=None,
        activity_log=tmp_path / "activity.csv",
        docexchange_transfer_limit=Budget(10, 60.0),
        docexchange_poll_limit=Budget(10, 1.0),
        tasktracker_limit=Budget(10, 1.0),
    )


@pytest.fixture
def request_rows() -> RequestFactory:
    """Build the start and finish rows of one limiter request (finish omitted if `responded` is None)."""

    def build(sent: float, responded: float | None, *, budget: str = "docexchange-search", request_id: str = "",
              patient_id: str = "p1", flow_run_id: str = "run-1") -> list[ActivityRow]:
        arguments = {"budget": budget} | ({"request_id": request_id} if request_id else {})
        encoded = json.dumps(arguments, sort_keys=True)
        rows = [ActivityRow(at(sent), "start", "request", patient_id, flow_run_id, encoded)]
        if responded is not None:
            rows.append(ActivityRow(at(responded), "finish", "request", patient_id, flow_run_id, encoded, "ok",
                                    f"{responded - sent:.6f}"))
        return rows

    return build


@pytest.fixture
def span_rows() -> SpanFactory:
    """Build the start and finish rows of one ordinary activity."""

    def build(activity: str, patient_id: str, start: float, finish: float | None, *, outcome: str = "ok",
              flow_run_id: str = "run-1", **arguments: object) -> list[ActivityRow]:
        encoded = json.dumps(arguments, sort_keys=True)
        rows = [ActivityRow(at(start), "start", activity, patient_id, flow_run_id, encoded)]
        if finish is not None:
            rows.append(ActivityRow(at(finish), "finish", activity, patient_id, flow_run_id, encoded, outcome,
                                    f"{finish - start:.6f}"))
        return rows

    return build


def by_time(rows: list[ActivityRow]) -> list[ActivityRow]:
    """Rows in the order a real log would hold them."""
    return sorted(rows, key=lambda row: row.timestamp)


@pytest.fixture
def chronological() -> Callable[[list[ActivityRow]], list[ActivityRow]]:
    """Sort rows by timestamp, as the writers would have appended them."""
    return by_time
