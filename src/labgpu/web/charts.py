"""Charts as SVG, drawn on the server: no script, no build step, nothing the Content-Security-Policy
forbids (colours are presentation attributes, not styles).

:func:`stacked_bars` draws GPU-hours per time bucket, one colour per series (the largest series; the
rest summed as one), with a legend; every bar has a ``<title>`` so a pointer shows its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from html import escape

from markupsafe import Markup

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 10, 10, 36
LEGEND_ROW = 18


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    step = float(10 ** len(str(int(top)))) / 10
    for factor in (1, 2, 2.5, 5, 10):
        if top <= step * factor:
            return step * factor
    return top


def stacked_bars(
    buckets: Sequence[datetime],
    series: dict[str, list[float]],
    *,
    tz: tzinfo,
    unit: str,
    title: str,
    others: str,
    most: int = len(PALETTE) - 1,
) -> Markup:
    """GPU-hours per bucket, stacked by series (at most ``most`` named; the rest as ``others``)."""
    names = list(series)[:most]
    rest = (
        [sum(vs) for vs in zip(*(series[n] for n in list(series)[most:]), strict=True)]
        if len(series) > most
        else []
    )
    shown = [(n, series[n]) for n in names] + ([(others, rest)] if rest else [])
    n = max(1, len(buckets))
    totals = [sum(vs[i] for _, vs in shown) for i in range(len(buckets))]
    top = _nice(max(totals, default=0.0))
    legend_rows = (len(shown) + 3) // 4
    height = HEIGHT + legend_rows * LEGEND_ROW
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar_w = plot_w / n
    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for k in range(5):
        value = top * k / 4
        y = TOP + plot_h - plot_h * k / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value:g}</text>')
    label_every = max(1, n // 12)
    for i, bucket in enumerate(buckets):
        x = LEFT + i * bar_w
        y = TOP + plot_h
        local = bucket.astimezone(tz)
        when = local.strftime("%m-%d %H:00") if unit == "hour" else local.strftime("%m-%d")
        for j, (name, values) in enumerate(shown):
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            out.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(name)} {escape(when)}: {value:.2f}</title></rect>'
            )
        if i % label_every == 0:
            short = local.strftime("%H") if unit == "hour" else local.strftime("%m-%d")
            out.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" font-size="10">{short}</text>'
            )
    for j, (name, _) in enumerate(shown):
        x = LEFT + (j % 4) * (plot_w / 4)
        y = HEIGHT + (j // 4) * LEGEND_ROW - 8
        out.append(
            f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{x + 14:.1f}" y="{y}" font-size="12">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text in it was escaped above
