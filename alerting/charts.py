"""PNG charts of the weekly summary.

Built on ``matplotlib.figure.Figure`` with the Agg canvas directly: no pyplot global state and
no GUI backend, so it is safe in a scheduler thread of a server process.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Values = Sequence[float | None]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _labels(days: Sequence[str]) -> list[str]:
    """ "Mon 16 Nov" on two lines ("Mon" / "16 Nov"): seven labels side by side never overlap."""
    return [d.replace(" ", "\n", 1) for d in days]


def _nan(values: Values) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def bar_chart(title: str, days: Sequence[str], series: Mapping[str, Values]) -> bytes:
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [d + i * width for d in range(len(days))]
        ax.bar(xs, [0 if v is None else v for v in values], width=width, label=name)
    ax.set_xticks(
        [d + width * (len(series) - 1) / 2 for d in range(len(days))], _labels(days), fontsize=8
    )
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _finite(series: Mapping[str, Values]) -> list[float]:
    return [v for values in series.values() for v in values if v is not None and v == v]


def split_references(
    series: Mapping[str, Values], references: Mapping[str, float], ratio: float = 4.0
) -> tuple[dict[str, float], dict[str, float]]:
    """(drawn, off scale): a reference more than ``ratio`` times the largest value is named,
    not drawn, so the axis stays scaled to the data."""
    top = max(_finite(series), default=None)
    if top is None or top <= 0:
        return dict(references), {}
    drawn = {k: v for k, v in references.items() if v <= top * ratio}
    return drawn, {k: v for k, v in references.items() if k not in drawn}


def line_chart(
    title: str,
    days: Sequence[str],
    series: Mapping[str, Values],
    references: Mapping[str, float] | None = None,
    unit: str = "",
) -> bytes:
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    xs = list(range(len(days)))
    for name, values in series.items():
        ax.plot(xs, _nan(values), marker="o", label=name)
    drawn, off_scale = split_references(series, references or {})
    for i, (name, value) in enumerate(drawn.items()):
        ax.axhline(value, linestyle=("--", ":", "-.")[i % 3], linewidth=1, color="grey", label=name)
    if off_scale:
        # a threshold 100x above the data would flatten every line onto the axis: say it instead
        top = max(_finite(series), default=0.0)
        note = "; ".join(
            f"{name}: off scale (the highest value is {top / v:.1%} of it)"
            for name, v in off_scale.items()
        )
        ax.text(0.99, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
    ax.set_xticks(xs, _labels(days), fontsize=8)
    ax.set_xlim(-0.5, len(days) - 0.5)
    ax.set_title(title)
    if unit:
        ax.set_ylabel(unit)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)
