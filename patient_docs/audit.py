"""Audit the activity log: could any rolling window have received more requests than its budget allows?"""

from __future__ import annotations

import io
import json
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from patient_docs.activity_log import ActivityRow, read_rows
from patient_docs.settings import Budget, Settings

BUDGET_FIELDS = {
    "docexchange-search": "docexchange_transfer_limit",
    "docexchange-poll": "docexchange_poll_limit",
    "tasktracker": "tasktracker_limit",
}
TRANSFER_BUDGET = "docexchange-search"
REQUEST_ACTIVITY = "request"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@lru_cache(maxsize=4096)
def _arguments(text: str) -> dict[str, object]:
    # A request's start and finish rows carry the same text, close together: decode it once. Do not mutate.
    return json.loads(text) if text else {}


def micros(timestamp: str) -> int:
    """An ISO-8601 timestamp as integer microseconds since the epoch, so comparisons are exact."""
    return (datetime.fromisoformat(timestamp) - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Span:
    """A start row and its finish row (None while running or if the writer died)."""

    start: ActivityRow
    finish: ActivityRow | None


def pair_rows(rows: Iterable[ActivityRow]) -> list[Span]:
    """Match finish rows to start rows on `request_id` if present, else on identical columns, first in first out."""
    open_starts: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
    spans: list[Span] = []
    for row in rows:
        request_id = _arguments(row.arguments).get("request_id") if '"request_id"' in row.arguments else None
        key = (row.flow_run_id, row.patient_id, row.activity, str(request_id) if request_id else row.arguments)
        if row.event == "start":
            open_starts[key].append(len(spans))
            spans.append(Span(row, None))
        elif row.event == "finish" and open_starts[key]:
            index = open_starts[key].popleft()
            spans[index] = Span(spans[index].start, row)
    return spans


def request_intervals(rows: Iterable[ActivityRow], timeout: float) -> tuple[dict[str, list[tuple[int, int]]], int]:
    """Per budget name, each request's (sent, responded) in microseconds, and how many had no finish row.

    A request arrived somewhere in [sent, responded]; one without a finish row (still running, or its process
    died) is taken to have been open until the client's time-out, the latest it could have been received.
    """
    intervals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    unanswered = 0
    for span in pair_rows(row for row in rows if row.activity == REQUEST_ACTIVITY):
        sent = micros(span.start.timestamp)
        unanswered += span.finish is None
        responded = micros(span.finish.timestamp) if span.finish else sent + round(timeout * 1_000_000)
        intervals[str(_arguments(span.start.arguments).get("budget", ""))].append((sent, responded))
    return intervals, unanswered


def max_in_window(intervals: Sequence[tuple[int, int]], window: int) -> int:
    """Largest k such that k requests could all have arrived within one window: max(sent) - min(responded) < window."""
    sent = sorted(s for s, _ in intervals)
    responded = sorted(r for _, r in intervals)
    # Anchor each candidate set on its earliest response r: it holds every request sent before r + window,
    # minus those that had already responded before r (all of which were sent before r + window too).
    return max((bisect_left(sent, r + window) - bisect_left(responded, r) for r in responded), default=0)


@dataclass(frozen=True)
class BudgetAudit:
    """The verdict for one budget."""

    name: str
    budget: Budget
    requests: int
    max_in_window: int
    exceeded: bool
    steady_use: float | None


@dataclass(frozen=True)
class AuditReport:
    """The verdicts for every budget of one activity log."""

    path: Path
    budgets: list[BudgetAudit]
    unanswered: int

    @property
    def exceeded(self) -> bool:
        """Any budget exceeded."""
        return any(item.exceeded for item in self.budgets)


def _audit_budget(name: str, budget: Budget, intervals: Sequence[tuple[int, int]]) -> BudgetAudit:
    window = round(budget.window * 1_000_000)
    steady: float | None = None
    if intervals:
        span_s = (max(s for s, _ in intervals) - min(s for s, _ in intervals)) / 1_000_000
        if span_s >= budget.window:
            # The first `count` requests are a free burst; after that the budget refills count per window.
            steady = (len(intervals) - budget.count) / (budget.count * span_s / budget.window)
    peak = max_in_window(intervals, window)
    return BudgetAudit(name, budget, len(intervals), peak, peak > budget.count, steady)


def audit(path: Path, settings: Settings) -> AuditReport:
    """Audit every known budget over the request rows of the log at `path`."""
    intervals, unanswered = request_intervals(read_rows(path), settings.request_timeout)
    budgets = [
        _audit_budget(name, getattr(settings, field), intervals.get(name, []))
        for name, field in BUDGET_FIELDS.items()
    ]
    return AuditReport(Path(path), budgets, unanswered)


def _table(report: AuditReport) -> Table:
    table = Table(title=f"Budget audit of {report.path}")
    for column in ("budget", "limit", "requests", "max in window", "steady use", "verdict"):
        text = column in ("budget", "verdict")
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    for item in report.budgets:
        steady = "-" if item.steady_use is None else f"{item.steady_use:.2f}"
        verdict = "[bold red]EXCEEDED[/]" if item.exceeded else "[green]ok[/]"
        table.add_row(item.name, str(item.budget), str(item.requests), str(item.max_in_window), steady, verdict)
    if report.unanswered:
        table.caption = f"{report.unanswered} request(s) without a response row, counted as open until the time-out"
    return table


def format_report(report: AuditReport) -> str:
    """The report as a plain-text table."""
    console = Console(file=io.StringIO(), width=110, color_system=None, force_terminal=False)
    console.print(_table(report))
    return console.file.getvalue()  # type: ignore[attr-defined]


def main(csv: Path | None, settings: Settings) -> int:
    """Print the audit of `csv` (default: the configured activity log); 1 if any budget was exceeded, else 0."""
    path = Path(csv or settings.activity_log)
    console = Console()
    if not path.exists():
        console.print(f"[yellow]no activity log at {path}: no requests to audit[/]")
    report = audit(path, settings)
    console.print(_table(report))
    return 1 if report.exceeded else 0
