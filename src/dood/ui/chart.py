"""The metrics chart as inline SVG (pure): one point per run in logical-date order, the quality-gate line,
champion promotions ringed, run types told apart by shape. Every text is escaped: run ids are user input.

Runs are spaced evenly in date order, not by elapsed time: a backfill of last January next to today's run
would otherwise sit in one pixel column. The dates are the ticks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from dood.ui.metrics import RunMetrics

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40
SHAPES = {"backfill": "square", "manual": "diamond", "scheduled": "circle"}
MAX_TICKS = 7  # dates under the axis; more would overlap at this width


def _shape(kind: str, x: float, y: float, title: str) -> str:
    r = 5
    css = f'class="point {escape(kind)}"'
    if SHAPES.get(kind) == "square":
        body = f'<rect {css} x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}">'
        end = "</rect>"
    elif SHAPES.get(kind) == "diamond":
        points = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
        body, end = f'<polygon {css} points="{points}">', "</polygon>"
    else:
        body, end = f'<circle {css} cx="{x:.1f}" cy="{y:.1f}" r="{r}">', "</circle>"
    return f"{body}<title>{escape(title)}</title>{end}"


def svg(runs: Sequence[RunMetrics], metric: str, threshold: float | None) -> str:
    """The chart of `metric` over `runs` (runs without it or without a date are left out)."""
    points = sorted(
        ((r, r.values[metric]) for r in runs if metric in r.values and r.when is not None),
        key=lambda p: p[0].when or datetime.min,  # only runs with a date are here
    )
    if not points:
        return f'<p class="empty">No run has reported {escape(metric)} yet.</p>'
    values = [v for _, v in points] + ([threshold] if threshold is not None else [])
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or 0.05
    low, high = low - pad, high + pad
    times = list(range(len(points)))  # the run's place in date order
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(i: float) -> float:
        return LEFT + (plot_w / 2 if len(points) == 1 else 12 + i / (len(points) - 1) * (plot_w - 24))

    def y_of(v: float) -> float:
        return TOP + (high - v) / (high - low) * plot_h

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(metric)} per run">',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
    ]
    for v in (low + pad, high - pad):
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y_of(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    every = max(1, -(-len(points) // MAX_TICKS))  # at most MAX_TICKS dates, the last one always
    ticked = sorted({*range(0, len(points), every), len(points) - 1})
    for i in ticked:
        label = escape(points[i][0].when.strftime("%Y-%m-%d"))
        # The last date ends at the plot's edge rather than past it (the svg would cut it).
        x, anchor = (x_of(i) + 12, "end") if i == len(points) - 1 and i else (x_of(i), "middle")
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 12}" text-anchor="{anchor}">{label}</text>')
    if threshold is not None:
        y = y_of(threshold)
        parts.append(f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="threshold-label" x="{LEFT + plot_w - 4}" y="{y - 6:.1f}" text-anchor="end">'
            f"quality gate {escape(metric)} ≥ {threshold:g}</text>"
        )
    line = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for (_, v), t in zip(points, times, strict=True))
    parts.append(f'<polyline class="series" points="{line}"/>')
    for (run, value), t in zip(points, times, strict=True):
        x, y = x_of(t), y_of(value)
        if run.promoted:
            parts.append(f'<circle class="champion" cx="{x:.1f}" cy="{y:.1f}" r="10"><title>champion</title></circle>')
        title = f"{run.run_id} ({run.run_type}) {run.when:%Y-%m-%d %H:%M} {metric}={value:g}"
        parts.append(_shape(run.run_type, x, y, title + (" — promoted" if run.promoted else "")))
    parts.append("</svg>")
    return "".join(parts)
