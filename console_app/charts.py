"""Bar and line charts drawn on the server as SVG: no script, no charting library, readable
without colour (a legend with names, values on the axis, a table beside each chart for screen
readers and for exact figures)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 48, 34


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str


@dataclass(frozen=True)
class Limit:
    """A horizontal line across the chart: a budget."""

    name: str
    value: float
    colour: str = "#b42318"


def nice_ceiling(value: float, *, whole: bool = False) -> tuple[float, float]:
    """A round top for the axis at or above `value`, and the step between its four gridlines
    (`whole`: a step of at least 1, for counts)."""
    if value <= 0:
        return (4.0, 1.0) if whole else (1.0, 0.25)
    raw = max(value / 4, 1) if whole else value / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return step * 4, step


def number(value: float) -> str:
    """Axis labels: 1.2k, 3.5M, 0.25, 12."""
    if value == 0:
        return "0"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if abs(value) >= 1_000:
        return f"{value / 1_000:.3g}k"
    return f"{value:.3g}"


def _frame(chart_id: str, title: str, desc: str, labels: Sequence[str], top: float,
           step: float, unit: str, series: Sequence[Series], limit: Limit | None,
           tick: Callable[[float], str]) -> tuple[list[str], Callable[[float], float], float]:
    """The SVG's opening, gridlines, axes, x labels and legend; the y of a value, and the
    width of one x slot."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(labels), 1)

    def y(value: float) -> float:
        return TOP + plot_h - (min(value, top) / top) * plot_h

    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    for index in range(5):
        value = step * index
        at = y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" '
                     f'y2="{at:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{at + 4:.1f}" '
                     f'text-anchor="end">{escape(tick(value))}</text>')
    parts.append(f'<text class="unit" x="4" y="{TOP - 10}">{escape(unit)}</text>')
    every = max(1, math.ceil(len(labels) / 8))
    for index, label in enumerate(labels):
        if index % every == 0 or index == len(labels) - 1 and len(labels) <= 8:
            x = LEFT + slot * (index + 0.5)
            parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0):.1f}" '
                 f'y2="{y(0):.1f}"/>')
    legend_x = LEFT
    for item in [*series, *([limit] if limit else [])]:
        dashed = ' stroke-dasharray="6 4"' if isinstance(item, Limit) else ""
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="12" y2="12" '
                     f'stroke="{item.colour}" stroke-width="6"{dashed}/>')
        parts.append(f'<text class="legend" x="{legend_x + 22}" y="16">'
                     f'{escape(item.name)}</text>')
        legend_x += 34 + 7 * len(item.name)
    return parts, y, slot


def _limit_line(limit: Limit | None, y: Callable[[float], float],
                tick: Callable[[float], str]) -> list[str]:
    if limit is None:
        return []
    at = y(limit.value)
    return [f'<line class="limit" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}" '
            f'stroke="{limit.colour}" stroke-width="2" stroke-dasharray="6 4"/>',
            f'<text class="limit-label" x="{LEFT + 6}" y="{at - 6:.1f}" fill="{limit.colour}" '
            f'stroke="#fff" stroke-width="4" paint-order="stroke">{escape(limit.name)} '
            f'{escape(tick(limit.value))}</text>']


def bar_chart(chart_id: str, title: str, desc: str, labels: Sequence[str],
              series: Sequence[Series], unit: str, *, stacked: bool = False,
              limit: Limit | None = None, tick: Callable[[float], str] = number,
              whole: bool = False) -> Markup:
    """Bars per label, side by side (or `stacked`), with a dashed `limit` line; `whole`: the
    values are counts."""
    totals = [sum(s.values[i] or 0 for s in series) if stacked
              else max((s.values[i] or 0 for s in series), default=0)
              for i in range(len(labels))]
    top, step = nice_ceiling(max([*totals, limit.value if limit else 0, 0]), whole=whole)
    parts, y, slot = _frame(chart_id, title, desc, labels, top, step, unit, series, limit, tick)
    gap = max(slot * 0.2, 1)
    width = (slot - gap) if stacked else (slot - gap) / max(len(series), 1)
    for index, label in enumerate(labels):
        base = 0.0
        for position, item in enumerate(series):
            value = item.values[index] or 0
            if value <= 0:
                continue
            x = LEFT + slot * index + gap / 2 + (0 if stacked else width * position)
            low, high = (base, base + value) if stacked else (0, value)
            parts.append(
                f'<rect x="{x:.1f}" y="{y(high):.1f}" width="{width:.1f}" '
                f'height="{max(y(low) - y(high), 1):.1f}" fill="{item.colour}">'
                f'<title>{escape(label)}: {escape(item.name)} {escape(tick(value))}</title>'
                '</rect>')
            base = high
    parts.extend(_limit_line(limit, y, tick))
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(chart_id: str, title: str, desc: str, labels: Sequence[str],
               series: Sequence[Series], unit: str, *,
               tick: Callable[[float], str] = number) -> Markup:
    """A line per series, a dot at each value; gaps where a value is None."""
    values = [v for s in series for v in s.values if v is not None]
    top, step = nice_ceiling(max([*values, 0]))
    parts, y, slot = _frame(chart_id, title, desc, labels, top, step, unit, series, None, tick)
    for item in series:
        path, pen_down = [], False
        for index, value in enumerate(item.values):
            if value is None:
                pen_down = False
                continue
            x = LEFT + slot * (index + 0.5)
            path.append(f"{'L' if pen_down else 'M'}{x:.1f} {y(value):.1f}")
            pen_down = True
            parts.append(f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="3" '
                         f'fill="{item.colour}"><title>{escape(labels[index])}: '
                         f'{escape(item.name)} {escape(tick(value))}</title></circle>')
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{item.colour}" '
                         'stroke-width="2.5" stroke-linejoin="round"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
