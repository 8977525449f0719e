"""Charts of a campaign's figures as SVG images, drawn on the server from the stats data (no
JavaScript, no third-party chart library): grouped bars by day, horizontal bars per funder.
Pure functions: data and labels in, SVG text out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 240
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 44, 36, 24
COLORS = ("#0b6bcb", "#15803d", "#b45309", "#7c3aed")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[int]


def _nice_max(value: int) -> int:
    """The axis top: the smallest 1, 2 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def bars_by_day(days: Sequence[str], series: Sequence[Series], *, title: str) -> str:
    """Grouped vertical bars, one group per day, one bar per series, with a legend."""
    top = -(-_nice_max(max((v for s in series for v in s.values), default=0)) // 4) * 4
    plot_w = WIDTH - MARGIN_LEFT - 10
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
    ]
    for tick in range(5):
        value = top * tick // 4
        y = MARGIN_TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" '
            f'stroke="#e5e7eb"/><text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end" fill="#5b6475">{value}</text>'
        )
    group_w = plot_w / max(len(days), 1)
    bar_w = min(max(group_w * 0.8 / max(len(series), 1), 1), 36)
    for d, day in enumerate(days):
        x0 = MARGIN_LEFT + d * group_w + (group_w - bar_w * len(series)) / 2
        for s, item in enumerate(series):
            value = item.values[d]
            h = plot_h * value / top
            x = x0 + s * bar_w
            y = MARGIN_TOP + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(day)} · '
                f"{escape(item.label)}: {value}</title></rect>"
            )
        if len(days) <= 14 or d % max(len(days) // 7, 1) == 0:
            middle = x0 + bar_w * len(series) / 2
            parts.append(
                f'<text x="{middle:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" '
                f'text-anchor="middle" fill="#5b6475">{escape(day[5:])}</text>'
            )
    for s, item in enumerate(series):
        x = MARGIN_LEFT + s * 140
        parts.append(
            f'<rect x="{x}" y="6" width="10" height="10" fill="{COLORS[s % len(COLORS)]}"/>'
            f'<text x="{x + 14}" y="15">{escape(item.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(rows: Sequence[tuple[str, int, int | None, str]], *, title: str) -> str:
    """One bar per row: (label, value, cap or None, value text). Each bar's length is its value
    over its cap (or over the largest value when no row has a cap)."""
    row_h = 34
    height = MARGIN_TOP + row_h * max(len(rows), 1) + 10
    widest = max((max(value, cap or 0) for _, value, cap, _ in rows), default=0) or 1
    label_w = 220
    bar_max = WIDTH - label_w - 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
    ]
    for index, (label, value, cap, text) in enumerate(rows):
        y = MARGIN_TOP + index * row_h
        scale = cap if cap else widest
        length = bar_max * min(value / scale, 1.0) if scale else 0
        parts.append(
            f'<text x="4" y="{y + 15}">{escape(label[:28])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_max}" height="16" fill="#eef1f6"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="16" '
            f'fill="{COLORS[index % len(COLORS)]}"/>'
            f'<text x="{label_w}" y="{y + 32}" fill="#5b6475">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
