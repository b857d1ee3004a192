"""Chart geometry: bar heights proportional to values on a round-numbered axis, and the same numbers as a table."""

from __future__ import annotations

import pytest

from upcoach.web.charts import HEIGHT, TOP, Series, bar_chart

PLOT = HEIGHT - 44 - TOP  # plot height between the top margin and the baseline


def test_bars_are_proportional_and_grouped() -> None:
    chart = bar_chart(
        id="c", title="t", description="d", categories=["a", "b"],
        series=[Series("x", "series-x", [30, 60]), Series("y", "series-y", [15, 0])], fmt=str,
    )  # fmt: skip
    assert [bar.css for bar in chart.bars] == ["series-x", "series-y", "series-x", "series-y"]
    # 60 rounds up to a 100 axis: heights are value / 100 of the plot.
    assert [bar.height for bar in chart.bars] == pytest.approx([PLOT * 0.3, PLOT * 0.15, PLOT * 0.6, 0])
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    assert chart.bars[0].x < chart.bars[1].x < chart.bars[2].x
    assert [tick.text for tick in chart.y_ticks] == ["0.0", "25.0", "50.0", "75.0", "100.0"]
    assert chart.rows == [["a", "30", "15"], ["b", "60", "0"]] and chart.headers == ["", "x", "y"]
    assert chart.bars[2].label == "b: x 60"


def test_counts_get_whole_number_ticks_and_percentages_a_fixed_axis() -> None:
    counts = bar_chart(id="c", title="t", description="d", categories=["a"], series=[Series("n", "s", [1])],
                       fmt=lambda v: f"{v:g}", integer=True)  # fmt: skip
    assert [tick.text for tick in counts.y_ticks] == ["0", "1", "2", "3", "4"]
    share = bar_chart(id="c", title="t", description="d", categories=["a"], series=[Series("p", "s", [50])],
                      fmt=str, y_max=100)  # fmt: skip
    assert share.bars[0].height == pytest.approx(PLOT / 2)


def test_no_data_is_an_empty_chart_and_ragged_series_are_refused() -> None:
    empty = bar_chart(id="c", title="t", description="d", categories=[], series=[Series("x", "s", [])], fmt=str)
    assert empty.empty and empty.bars == []
    with pytest.raises(ValueError, match="2 values for 1 categories"):
        bar_chart(id="c", title="t", description="d", categories=["a"], series=[Series("x", "s", [1, 2])], fmt=str)
