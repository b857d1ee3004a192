"""Bar charts as plain geometry, drawn as inline SVG by templates/_chart.html.

No chart library, no script: the server computes rectangles in a fixed viewBox and CSS scales the SVG to the
screen. Every chart also carries its numbers as a table, which the template hides visually but leaves to screen
readers (an SVG alone says nothing to them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 300
LEFT = 100
RIGHT = 12
TOP = 16
BOTTOM = 44
MAX_X_LABELS = 6
TICKS = 4  # gridlines above the baseline
GAP = 0.2  # share of each category's slot left empty between groups


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # a class of dashboard.css that colours the bars (CSP: no inline styles)
    values: Sequence[float]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    label: str  # shown as the bar's tooltip (<title>)


@dataclass(frozen=True)
class Tick:
    position: float
    text: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    bars: list[Bar]
    x_labels: list[Tick]
    y_ticks: list[Tick]
    legend: list[tuple[str, str]]  # (css, name)
    headers: list[str]
    rows: list[list[str]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM
    reference: Tick | None = None  # a target drawn across the plot, e.g. the plan's quality goal
    empty_text: str = "No requests in this period."

    @property
    def empty(self) -> bool:
        return not self.rows


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``: round numbers for the axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def bar_chart(
    *,
    id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
    short: Callable[[str], str] = str,
    category_header: str = "",
    y_max: float | None = None,
    integer: bool = False,
    ticks: int = TICKS,
    reference: tuple[float, str] | None = None,
    empty_text: str = "No requests in this period.",
) -> Chart:
    """Grouped bars: one group per category, one bar per series. ``fmt`` formats values for axis, tooltip, table;
    ``integer`` keeps the axis on whole numbers (counts); ``ticks`` gridlines above the baseline; ``reference``
    (value, label) draws a line at that value."""
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(categories)} categories")
    peak = max((v for s in series for v in s.values), default=0.0)
    if y_max is not None:
        top = y_max
    elif integer:
        # Counts: whole numbers on every one of the four gridlines.
        top = float(ticks * max(1, math.ceil(peak / ticks)))
    else:
        top = _nice_ceiling(peak)
    plot_width = WIDTH - RIGHT - LEFT
    plot_height = HEIGHT - BOTTOM - TOP
    baseline = HEIGHT - BOTTOM
    bars: list[Bar] = []
    x_labels: list[Tick] = []
    if categories:
        slot = plot_width / len(categories)
        bar_width = slot * (1 - GAP) / max(1, len(series))
        label_every = math.ceil(len(categories) / MAX_X_LABELS)
        for i, category in enumerate(categories):
            start = LEFT + i * slot + slot * GAP / 2
            for j, s in enumerate(series):
                value = max(0.0, s.values[i])
                height = plot_height * min(value, top) / top
                bars.append(
                    Bar(
                        x=round(start + j * bar_width, 2),
                        y=round(baseline - height, 2),
                        width=round(bar_width, 2),
                        height=round(height, 2),
                        css=s.css,
                        label=f"{category}: {s.name} {fmt(s.values[i])}",
                    )
                )
            if i % label_every == 0:
                x_labels.append(Tick(round(LEFT + (i + 0.5) * slot, 2), short(category)))
    y_ticks = [Tick(round(baseline - plot_height * k / ticks, 2), fmt(top * k / ticks)) for k in range(ticks + 1)]
    line = None
    if reference is not None:
        value, text = reference
        line = Tick(round(baseline - plot_height * min(max(value, 0.0), top) / top, 2), text)
    return Chart(
        id=id,
        title=title,
        description=description,
        bars=bars,
        x_labels=x_labels,
        y_ticks=y_ticks,
        legend=[(s.css, s.name) for s in series],
        headers=[category_header, *(s.name for s in series)],
        rows=[[category, *(fmt(s.values[i]) for s in series)] for i, category in enumerate(categories)],
        reference=line,
        empty_text=empty_text,
    )
