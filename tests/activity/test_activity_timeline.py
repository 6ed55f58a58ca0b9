"""The timeline picture: a PNG with one bar per (non-request) activity and the transfer budget's use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.patches import Rectangle

from patient_docs.activity_log import ActivityRow, append_rows, read_rows
from patient_docs.settings import Settings
from patient_docs.timeline import build_figure, draw_timeline

Factory = Callable[..., list[ActivityRow]]
Sort = Callable[[list[ActivityRow]], list[ActivityRow]]


def _log(settings: Settings, span_rows: Factory, request_rows: Factory, chronological: Sort) -> Path:
    rows = [
        *span_rows("search", "p1", 0.0, 0.5),
        *span_rows("download", "p1", 0.5, 3.0),
        *span_rows("convert", "p1", 3.0, 5.0, file="a.doc"),
        *span_rows("convert", "p1", 3.0, 6.0, file="b.doc"),
        *span_rows("search", "p2", 0.2, 0.4),
        *span_rows("download", "p2", 0.4, 2.0, outcome="HostileArchive"),
        *span_rows("report", "p3", 1.0, None, flow_run_id="run-2"),
        *request_rows(0.0, 0.1, request_id="q1"),
        *request_rows(0.2, 0.3, request_id="q2", patient_id="p2"),
        *request_rows(0.5, 0.6, request_id="q3"),
        *request_rows(1.0, 1.1, request_id="q4", budget="tasktracker", patient_id="p3", flow_run_id="run-2"),
    ]
    append_rows(settings.activity_log, chronological(rows))
    return settings.activity_log


def _rectangles(figure) -> int:
    top = figure.axes[0]
    return sum(isinstance(patch, Rectangle) for container in top.containers for patch in container.patches)


def test_png_with_one_bar_per_activity(
    tmp_path: Path, settings: Settings, span_rows: Factory, request_rows: Factory, chronological: Sort
) -> None:
    csv = _log(settings, span_rows, request_rows, chronological)
    summary = draw_timeline(csv, tmp_path / "out" / "timeline.png", settings)
    assert summary.path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (summary.bars, summary.patients) == (7, 3)
    figure, patients = build_figure(read_rows(csv), settings)
    assert _rectangles(figure) == 7 and patients == 3
    usage = figure.axes[1].lines[0].get_ydata()
    assert max(usage) == 0.3  # three transfer requests within 60 s of a 10/60s budget; tasktracker not counted


def test_only_selected_flow_runs(
    tmp_path: Path, settings: Settings, span_rows: Factory, request_rows: Factory, chronological: Sort
) -> None:
    csv = _log(settings, span_rows, request_rows, chronological)
    summary = draw_timeline(csv, tmp_path / "run2.png", settings, flow_run_ids={"run-2"})
    assert (summary.bars, summary.patients) == (1, 1)
    assert draw_timeline(csv, tmp_path / "none.png", settings, flow_run_ids=set()).bars == 0
    assert (tmp_path / "none.png").read_bytes()[:4] == b"\x89PNG"
