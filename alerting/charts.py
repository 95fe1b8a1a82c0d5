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
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, linestyle=("--", ":", "-.")[i % 3], linewidth=1, color="grey", label=name)
    ax.set_xticks(xs, _labels(days), fontsize=8)
    ax.set_xlim(-0.5, len(days) - 0.5)
    ax.set_title(title)
    if unit:
        ax.set_ylabel(unit)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)
