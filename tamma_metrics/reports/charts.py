"""Server-rendered SVG charts: titled, axes labelled with units, a legend, and the
Okabe-Ito palette (told apart with the common colour-vision deficiencies). No script,
nothing fetched: a page with these charts works offline. The pages show each chart's
numbers in a table beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.html import escape

__all__ = ["PALETTE", "PARTIAL_OPACITY", "Series", "bars", "lines"]

# Okabe & Ito (2008): distinguishable with protanopia, deuteranopia and tritanopia.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")

# A bar whose period is not over (the week holding today) is drawn pale with a dashed
# outline, labelled "partial" above it, and named in the legend.
PARTIAL_OPACITY = 0.35
WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 64


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None: no value (a gap)
    # What a mark's tooltip says of each value ("10.8 h"); the number itself when empty.
    texts: Sequence[str] = ()

    def text(self, index: int, value: float) -> str:
        return self.texts[index] if self.texts else _number(value)


def _nice_ceiling(value: float) -> float:
    """A round upper bound for the y axis (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value:,.0f}"


def _frame(title: str, x_labels: Sequence[str], y_label: str, top: float) -> list[str]:
    """Title, axes, y ticks and grid, x labels (thinned to fit)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="tamma-chart" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
        f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]
    for n in range(5):
        value = top * n / 4
        y = TOP + plot_h - plot_h * n / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 4}" y="{y + 4:.1f}" '
            f'text-anchor="end">{_number(value)}</text>'
        )
    step = max(1, math.ceil(len(x_labels) / 10))
    slot = plot_w / max(len(x_labels), 1)
    for index, label in enumerate(x_labels):
        if index % step:
            continue
        x = LEFT + slot * (index + 0.5)
        parts.append(
            f'<text transform="translate({x:.1f} {TOP + plot_h + 12}) rotate(35)" '
            f'font-size="10">{escape(label)}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#333"/>'
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#333"/>'
    )
    return parts


def _legend(series: Sequence[Series], partial: str = "") -> list[str]:
    parts, x = [], LEFT
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="24" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="33">{escape(one.name)}</text>'
        )
        x += 24 + 7 * len(one.name)
    if partial:
        parts.append(
            f'<rect x="{x}" y="24" width="10" height="10" fill="{PALETTE[0]}" '
            f'fill-opacity="{PARTIAL_OPACITY}" stroke="{PALETTE[0]}" stroke-dasharray="3 2"/>'
            f'<text x="{x + 14}" y="33" class="tamma-partial-legend">{escape(partial)}</text>'
        )
    return parts


def bars(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    partial: Mapping[int, str] | None = None,
) -> str:
    """Stacked bars, one stack per x label. ``partial`` maps the index of a stack whose
    period is not over to what its legend entry says ("week not over: 2 of 7 days"):
    that stack is drawn pale with a dashed outline and labelled "partial"."""
    partial = partial or {}
    totals = [sum(one.values[i] or 0 for one in series) for i in range(len(x_labels))]
    top = _nice_ceiling(max(totals, default=0))
    parts = _frame(title, x_labels, y_label, top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(x_labels), 1)
    width = max(slot * 0.7, 1)
    for i in range(len(x_labels)):
        base = 0.0
        x = LEFT + slot * i + (slot - width) / 2
        for index, one in enumerate(series):
            value = one.values[i] or 0
            if not value:
                continue
            colour = PALETTE[index % len(PALETTE)]
            height = plot_h * value / top
            y = TOP + plot_h - plot_h * base / top - height
            style = f'fill="{colour}"'
            note = ""
            if i in partial:
                style += (
                    f' fill-opacity="{PARTIAL_OPACITY}" stroke="{colour}" '
                    'stroke-width="1.5" stroke-dasharray="4 2"'
                )
                note = f" ({partial[i]})"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
                f"{style}><title>{escape(x_labels[i])} {escape(one.name)}: "
                f"{escape(one.text(i, value))}{escape(note)}</title></rect>"
            )
            base += value
        if i in partial:
            stack_top = TOP + plot_h - plot_h * base / top
            # Above the stack, or inside its top when there is no room under the legend.
            y = stack_top - 4 if stack_top - TOP > 14 else stack_top + 12
            parts.append(
                f'<text x="{x + width / 2:.1f}" y="{y:.1f}" text-anchor="middle" '
                'font-style="italic" class="tamma-partial">partial</text>'
            )
    legend = next(iter(partial.values()), "")
    return "".join([*parts, *_legend(series, legend), "</svg>"])


def lines(title: str, x_labels: Sequence[str], series: Sequence[Series], y_label: str) -> str:
    """One line with points per series; a None value breaks the line."""
    values = [v for one in series for v in one.values if v is not None]
    top = _nice_ceiling(max(values, default=0))
    parts = _frame(title, x_labels, y_label, top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(x_labels), 1)
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        run: list[str] = []
        points = []
        for i, value in enumerate(one.values):
            if value is None:
                if len(run) > 1:
                    points.append(run)
                run = []
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * value / top
            run.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(x_labels[i])} {escape(one.name)}: "
                f"{escape(one.text(i, value))}</title></circle>"
            )
        if len(run) > 1:
            points.append(run)
        for run in points:
            parts.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
    return "".join([*parts, *_legend(series), "</svg>"])
