"""Which tags got worse: each vocabulary tag's F1 from feedback against its baseline F1.

The counts come from the store (``PredictionStore.tag_counts``, SQL); the baseline is the
served model artefact's ``per_tag_metrics.csv`` (its validation slice). The drift report shows
them as its "Tags" section and ``latest.json`` as ``"tags"``; the weekly summary ranks the
week's tags by their F1 change (alerting/weekly.py). One meaning of tp/fp/fn, support and
status everywhere: :mod:`tagger.tagquality`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from store import PredictionStore
from tagger.tagquality import TagCounts, TagQualityRules, tag_status

STATUS_RANK = {"red": 0, "yellow": 1, "green": 2}


def baseline_f1(per_tag: pd.DataFrame | None) -> dict[str, float]:
    """``tag -> F1`` of an artefact's per-tag table (empty without one)."""
    if per_tag is None or per_tag.empty:
        return {}
    return {str(t): float(f) for t, f in zip(per_tag["tag"], per_tag["f1"], strict=True)}


def is_judged(row: Mapping[str, Any], rules: TagQualityRules) -> bool:
    """A row of :func:`tag_row` with enough support and a baseline good enough for a drop to
    mean something (what :func:`tagger.tagquality.tag_status` judges)."""
    base = row["baseline_f1"]
    return (
        base is not None and row["support"] >= rules.min_support and base >= rules.min_baseline_f1
    )


def tag_row(counts: TagCounts, base: float | None, rules: TagQualityRules) -> dict[str, Any]:
    """One tag as latest.json lists it (ratios rounded to 4 digits)."""
    return {
        "tag": counts.tag,
        "support": counts.support,
        "precision": round(counts.precision, 4),
        "recall": round(counts.recall, 4),
        "f1": round(counts.f1, 4),
        "baseline_f1": None if base is None else round(base, 4),
        "status": tag_status(counts, base, rules),
    }


def _worst_first(row: dict[str, Any], rules: TagQualityRules) -> tuple[Any, ...]:
    """Red, then yellow, then the other judged tags, each by F1 drop (largest first); then the
    tags with too little feedback or no baseline, by support."""
    judged = is_judged(row, rules)
    drop = row["baseline_f1"] - row["f1"] if judged else -math.inf
    return (STATUS_RANK[row["status"]], not judged, -drop, -row["support"], row["tag"])


def tag_table(
    counts: Mapping[str, TagCounts], baselines: Mapping[str, float], rules: TagQualityRules
) -> list[dict[str, Any]]:
    """Every tag with some support (given or predicted at least once), worst first."""
    rows = [tag_row(c, baselines.get(t), rules) for t, c in counts.items() if c.support > 0]
    return sorted(rows, key=lambda r: _worst_first(r, rules))


@dataclass
class TagReport:
    """The tags of one period (the drift report's latest bin, the weekly summary's week)."""

    since: pd.Timestamp
    until: pd.Timestamp
    questions: int  # with feedback, served in the period
    rules: TagQualityRules
    rows: list[dict[str, Any]] = field(default_factory=list)
    has_baseline: bool = True

    @property
    def judged(self) -> int:
        return sum(1 for r in self.rows if is_judged(r, self.rules))

    def is_judged(self, row: Mapping[str, Any]) -> bool:
        return is_judged(row, self.rules)

    @property
    def note(self) -> str:
        """Why few or no tags are judged, in words ("" when some are)."""
        if not self.has_baseline:
            return (
                "the served model has no per_tag_metrics.csv (trained before per-tag "
                "baselines): F1 is shown without a baseline, nothing is judged"
            )
        if self.judged:
            return ""
        return (
            f"too little feedback to judge any tag: {self.questions} questions with feedback, "
            f"and no tag with a support of {self.rules.min_support} (questions where it was "
            "given or predicted)"
        )


def read_tags(
    store: PredictionStore,
    model_path: Path,
    vocabulary: list[str],
    since: pd.Timestamp,
    until: pd.Timestamp,
    rules: TagQualityRules,
) -> TagReport:
    """The tags of [since, until) from the store against the artefact's per-tag baseline."""
    from tagger.artefact import load_per_tag

    per_tag = load_per_tag(model_path)
    counts = store.tag_counts(since.timestamp(), until.timestamp(), vocabulary)
    return TagReport(
        since=since,
        until=until,
        questions=store.count_labelled(since.timestamp(), until.timestamp()),
        rules=rules,
        rows=tag_table(counts, baseline_f1(per_tag), rules),
        has_baseline=per_tag is not None,
    )


def section_html(report: TagReport, limit: int = 40) -> str:
    """The drift report's "Tags" section: red and yellow tags first, with their numbers."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=select_autoescape(["html", "html.j2"]),
    )
    return env.get_template("tags.html.j2").render(r=report, rows=report.rows[:limit])


def _change(
    row: dict[str, Any], previous: Mapping[str, TagCounts], rules: TagQualityRules
) -> dict[str, Any]:
    before = previous.get(row["tag"])
    enough = before is not None and before.support >= rules.min_support
    return row | {
        "change": round(row["f1"] - row["baseline_f1"], 4),
        "previous_f1": round(before.f1, 4) if enough and before is not None else None,
        "previous_support": 0 if before is None else before.support,
    }


def period_tags(
    report: TagReport, previous: Mapping[str, TagCounts], n: int = 10
) -> dict[str, Any]:
    """The weekly summary's "Tags getting worse" and "Tags getting better": the ``n`` judged
    tags (support >= min_support, a usable baseline) whose F1 fell, or rose, the most against
    their baseline F1; each with its F1 of the period before (``previous``: None when that
    period had too little support for it)."""
    rows = [_change(r, previous, report.rules) for r in report.rows if report.is_judged(r)]
    worse = sorted((r for r in rows if r["change"] < 0), key=lambda r: (r["change"], r["tag"]))
    better = sorted((r for r in rows if r["change"] > 0), key=lambda r: (-r["change"], r["tag"]))
    return {
        "questions": report.questions,
        "judged": len(rows),
        "min_support": report.rules.min_support,
        "note": report.note,
        "worse": worse[:n],
        "better": better[:n],
    }
