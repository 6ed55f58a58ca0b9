"""The budget audit: violations are caught, a legal schedule passes, latency is treated conservatively."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from patient_docs.activity_log import ActivityRow, append_rows
from patient_docs.audit import (
    AuditReport,
    BudgetAudit,
    audit,
    format_report,
    main,
    max_in_window,
    micros,
    request_intervals,
)
from patient_docs.settings import Budget, Settings

RequestFactory = Callable[..., list[ActivityRow]]
Sort = Callable[[list[ActivityRow]], list[ActivityRow]]


def _write(settings: Settings, rows: list[ActivityRow], chronological: Sort) -> Path:
    append_rows(settings.activity_log, chronological(rows))
    return settings.activity_log


def _transfer(report: AuditReport) -> BudgetAudit:
    return next(item for item in report.budgets if item.name == "docexchange-search")


def test_eleven_requests_in_a_minute_exceed_ten_per_minute(
    settings: Settings, request_rows: RequestFactory, chronological: Sort, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row for i in range(11) for row in request_rows(i * 5.0, i * 5.0 + 0.2, request_id=f"r{i}")]
    path = _write(settings, rows, chronological)
    item = _transfer(audit(path, settings))
    assert (item.requests, item.max_in_window, item.exceeded, item.budget) == (11, 11, True, Budget(10, 60.0))
    assert main(path, settings) == 1
    assert "EXCEEDED" in capsys.readouterr().out


def test_slots_reused_exactly_at_response_plus_window_are_legal(
    settings: Settings, request_rows: RequestFactory, chronological: Sort
) -> None:
    sent: list[float] = []
    responded: list[float] = []
    for i in range(30):
        sent.append(i * 0.1 if i < 10 else responded[i - 10] + 60.0)
        responded.append(sent[i] + 0.5)
    rows = [row for i in range(30) for row in request_rows(sent[i], responded[i], request_id=f"r{i}")]
    path = _write(settings, rows, chronological)
    report = audit(path, settings)
    item = _transfer(report)
    assert (item.requests, item.max_in_window, item.exceeded) == (30, 10, False)
    assert item.steady_use is not None and 0.95 < item.steady_use <= 1.0
    assert main(path, settings) == 0
    assert "docexchange-search" in format_report(report) and "EXCEEDED" not in format_report(report)


def test_one_microsecond_early_is_a_violation(
    settings: Settings, request_rows: RequestFactory, chronological: Sort
) -> None:
    rows = [row for i in range(10) for row in request_rows(i * 0.1, i * 0.1 + 0.5, request_id=f"r{i}")]
    rows += request_rows(0.5 + 60.0 - 0.000001, 61.0, request_id="late")
    item = _transfer(audit(_write(settings, rows, chronological), settings))
    assert (item.max_in_window, item.exceeded) == (11, True)


def test_overlapping_latency_is_judged_conservatively(
    settings: Settings, request_rows: RequestFactory, chronological: Sort
) -> None:
    strict = settings.model_copy(update={"docexchange_transfer_limit": Budget(2, 10.0)})
    # Sent 14 s apart, but the first may have arrived as late as t=5: all three can fall into [5, 15).
    slow = [*request_rows(0.0, 5.0, request_id="a"), *request_rows(12.0, 13.0, request_id="b"),
            *request_rows(14.0, 15.0, request_id="c")]
    item = _transfer(audit(_write(strict, slow, chronological), strict))
    assert (item.max_in_window, item.exceeded) == (3, True)
    strict.activity_log.unlink()
    fast = [*request_rows(0.0, 1.0, request_id="a"), *slow[2:]]
    item = _transfer(audit(_write(strict, fast, chronological), strict))
    assert (item.max_in_window, item.exceeded) == (2, False)


def test_pairs_on_request_id_and_bounds_unanswered_by_timeout(
    request_rows: RequestFactory, chronological: Sort
) -> None:
    # Same budget, overlapping and answered out of order: only request_id tells which response is whose.
    slow, quick = request_rows(0.0, 9.0, request_id="x"), request_rows(1.0, 2.0, request_id="y")
    pending = request_rows(3.0, None, request_id="z")
    intervals, unanswered = request_intervals(chronological(slow + quick + pending), timeout=30.0)
    sent_pending = micros(pending[0].timestamp)
    assert sorted(intervals["docexchange-search"]) == [
        (micros(slow[0].timestamp), micros(slow[1].timestamp)),
        (micros(quick[0].timestamp), micros(quick[1].timestamp)),
        (sent_pending, sent_pending + 30_000_000),
    ]
    assert unanswered == 1


def test_budgets_are_reported_separately(
    settings: Settings, request_rows: RequestFactory, chronological: Sort
) -> None:
    rows = [row for i in range(11) for row in request_rows(i * 0.01, i * 0.01 + 0.005, budget="tasktracker")]
    rows += [row for i in range(5) for row in request_rows(i * 0.01, i * 0.01 + 0.005, budget="docexchange-poll")]
    report = audit(_write(settings, rows, chronological), settings)
    verdicts = {item.name: (item.requests, item.exceeded) for item in report.budgets}
    assert verdicts == {"docexchange-search": (0, False), "docexchange-poll": (5, False), "tasktracker": (11, True)}


def test_missing_log_audits_clean(tmp_path: Path, settings: Settings) -> None:
    assert main(tmp_path / "none.csv", settings) == 0


def _brute_force(intervals: list[tuple[int, int]], window: int) -> int:
    return max(
        (len(subset) for k in range(1, len(intervals) + 1) for subset in itertools.combinations(intervals, k)
         if max(s for s, _ in subset) - min(r for _, r in subset) < window),
        default=0,
    )


def test_max_in_window_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(200):
        intervals = []
        for _ in range(rng.randint(0, 8)):
            sent = rng.randint(0, 40)
            intervals.append((sent, sent + rng.choice([0, 0, 1, 3, 12])))
        assert max_in_window(intervals, 10) == _brute_force(intervals, 10)


def test_hundred_thousand_requests_audit_in_seconds(
    settings: Settings, request_rows: RequestFactory, chronological: Sort
) -> None:
    rng = random.Random(3)
    rows = [row for i in range(100_000) for row in request_rows(i * 0.7, i * 0.7 + rng.uniform(0.005, 0.05))]
    path = _write(settings, rows, lambda rows: rows)
    began = time.perf_counter()
    item = _transfer(audit(path, settings))
    assert time.perf_counter() - began < 10
    assert item.requests == 100_000 and item.max_in_window == 86 and item.exceeded
