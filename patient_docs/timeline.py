"""Draw the activity log: one row of bars per patient above the transfer budget's use over time.

Bars show every activity except `request`: requests are far too many and short to read as bars, so they are
drawn only as the budget-use line in the bottom axes. A bar still open (no finish row) runs to the end of the
log and is drawn faded; a failed activity is hatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from patient_docs.activity_log import ActivityRow, read_rows
from patient_docs.audit import REQUEST_ACTIVITY, TRANSFER_BUDGET, micros, pair_rows, request_intervals
from patient_docs.settings import Settings

MAX_LABELLED_PATIENTS = 60


@dataclass(frozen=True)
class TimelineSummary:
    """What was drawn and where."""

    bars: int
    patients: int
    path: Path


def bar_count(figure: Figure) -> int:
    """Number of activity bars in the top axes of a figure made by `build_figure`."""
    return sum(len(container.patches) for container in figure.axes[0].containers)


def _usage_steps(sent: Sequence[float], window: float, count: int, end: float) -> tuple[list[float], list[float]]:
    # Each request counts in the trailing window from its sending until `window` seconds later.
    events = sorted([(t, 1) for t in sent] + [(t + window, -1) for t in sent])
    xs, ys, level = [0.0], [0.0], 0
    for t, change in events:
        level += change
        xs.append(t)
        ys.append(level / count)
    xs.append(max(end, xs[-1]))
    ys.append(ys[-1])
    return xs, ys


def build_figure(rows: Sequence[ActivityRow], settings: Settings) -> tuple[Figure, int]:
    """The timeline figure for `rows` and the number of patients in it."""
    origin = min((micros(row.timestamp) for row in rows), default=0)
    end = max((micros(row.timestamp) - origin for row in rows), default=0) / 1_000_000

    def seconds(row: ActivityRow) -> float:
        return (micros(row.timestamp) - origin) / 1_000_000

    spans = [span for span in pair_rows(rows) if span.start.activity != REQUEST_ACTIVITY]
    patients = {patient: y for y, patient in enumerate(dict.fromkeys(span.start.patient_id for span in spans))}
    names = sorted({span.start.activity for span in spans})
    figure = Figure(figsize=(12, 3 + min(0.3 * len(patients), 30)), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for index, name in enumerate(names):
        mine = [span for span in spans if span.start.activity == name]
        lefts = [seconds(span.start) for span in mine]
        rights = [seconds(span.finish) if span.finish else end for span in mine]
        bars = top.barh(
            [patients[span.start.patient_id] for span in mine],
            [max(right - left, 0.0) for left, right in zip(lefts, rights)],
            left=lefts, height=0.7, color=palette(index % palette.N), label=name,
        )
        for bar, span in zip(bars.patches, mine):
            if span.finish is None:
                bar.set_alpha(0.4)
            elif span.finish.outcome != "ok":
                bar.set_hatch("///")
                bar.set_edgecolor("black")
    labels = list(patients) if len(patients) <= MAX_LABELLED_PATIENTS else [""] * len(patients)
    top.set_yticks(range(len(patients)), labels)
    top.set_ylim(len(patients) - 0.5 if patients else 1, -0.5)
    top.set_ylabel("patient")
    top.set_title("Activities per patient (hatched: failed, faded: unfinished)")
    if names:
        handles = [Patch(color=palette(i % palette.N), label=name) for i, name in enumerate(names)]
        top.legend(handles=handles, loc="upper right", fontsize="small", ncols=max(1, len(names) // 8))
    else:
        top.text(0.5, 0.5, "no activities", transform=top.transAxes, ha="center")

    budget = settings.docexchange_transfer_limit
    intervals, _ = request_intervals(rows, settings.request_timeout)
    sent = [(start - origin) / 1_000_000 for start, _ in intervals.get(TRANSFER_BUDGET, [])]
    xs, ys = _usage_steps(sent, budget.window, budget.count, end)
    bottom.step(xs, ys, where="post", color="tab:blue")
    bottom.axhline(1.0, color="tab:red", linestyle="--", linewidth=1)
    bottom.set_ylim(0, max([1.0, *ys]) * 1.05)
    bottom.set_xlim(0, end or 1.0)  # the usage line decays past the last row; the log ends there
    bottom.set_ylabel("transfer budget use")
    bottom.set_xlabel("seconds since the first row")
    bottom.set_title(f"{TRANSFER_BUDGET} requests sent in the trailing {budget.window:g}s / {budget.count}")
    return figure, len(patients)


def draw_timeline(
    csv: Path, out: Path, settings: Settings, *, flow_run_ids: set[str] | None = None
) -> TimelineSummary:
    """Draw the log at `csv` (only the given flow runs, if any) as a PNG at `out`."""
    rows = read_rows(csv)
    if flow_run_ids is not None:
        rows = [row for row in rows if row.flow_run_id in flow_run_ids]
    figure, patients = build_figure(rows, settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=100)
    return TimelineSummary(bar_count(figure), patients, out)
