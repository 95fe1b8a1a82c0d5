"""Which tags got worse: the report's "Tags" section and latest.json's "tags", from the store's
per-tag counts against the served model's per-tag baseline."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from drift.notify import served_per_tag
from drift.tags import TagReport, period_tags, section_html, tag_table
from tagger.artefact import load_per_tag
from tagger.tagquality import TagCounts, TagQualityRules
from tests.drift.conftest import DriftCase

RULES = TagQualityRules(min_support=30, yellow_share=0.75, red_share=0.5, min_baseline_f1=0.2)
BASELINES = {"javascript": 0.8, "python": 0.9, "java": 0.7, "css": 0.6, "regex": 0.1}


def _counts() -> dict[str, TagCounts]:
    return {
        "javascript": TagCounts("javascript", tp=10, fp=5, fn=60),  # F1 0.24: red
        "python": TagCounts("python", tp=60, fp=20, fn=20),  # F1 0.75 vs 0.9: green
        "java": TagCounts("java", tp=10, fp=10, fn=10),  # F1 0.5 vs 0.7: yellow
        "css": TagCounts("css", tp=2, fp=0, fn=8),  # support 10: too little feedback
        "regex": TagCounts("regex", tp=0, fp=20, fn=20),  # weak baseline: not judged
        "ruby": TagCounts("ruby", tp=15, fp=10, fn=10),  # no baseline
        "go": TagCounts("go"),  # neither given nor predicted: not listed
    }


def test_tags_are_listed_worst_first_with_their_numbers() -> None:
    rows = tag_table(_counts(), BASELINES, RULES)
    assert [r["tag"] for r in rows] == ["javascript", "java", "python", "regex", "ruby", "css"]
    assert [r["status"] for r in rows] == ["red", "yellow", "green", "green", "green", "green"]
    assert rows[0] == {
        "tag": "javascript",
        "support": 75,
        "precision": round(10 / 15, 4),
        "recall": round(10 / 70, 4),
        "f1": round(20 / 85, 4),
        "baseline_f1": 0.8,
        "status": "red",
    }
    assert next(r for r in rows if r["tag"] == "ruby")["baseline_f1"] is None


def test_the_section_says_when_there_is_too_little_feedback() -> None:
    since = pd.Timestamp("2026-03-02", tz="UTC")
    few = {"css": TagCounts("css", tp=2, fp=0, fn=8)}
    report = TagReport(
        since, since + pd.Timedelta(days=1), 12, RULES, tag_table(few, BASELINES, RULES)
    )
    assert report.judged == 0 and "12 questions with feedback" in report.note
    html = section_html(report)
    assert "too little feedback" in html and "Not judged" in html and "<code>css</code>" in html
    full = TagReport(since, since, 500, RULES, tag_table(_counts(), BASELINES, RULES))
    html = section_html(full)
    assert full.note == "" and "Not judged" not in html
    assert html.index("javascript") < html.index("java<") < html.index("python")
    assert "weak baseline" in html and "no baseline" in html
    bare = TagReport(since, since, 500, RULES, tag_table(_counts(), {}, RULES), has_baseline=False)
    assert "per_tag_metrics.csv" in bare.note


def test_the_week_ranks_judged_tags_by_their_f1_change() -> None:
    since = pd.Timestamp("2026-03-02", tz="UTC")
    report = TagReport(since, since, 500, RULES, tag_table(_counts(), BASELINES, RULES))
    previous = {
        "javascript": TagCounts("javascript", tp=40, fp=10, fn=10),
        "java": TagCounts("java", tp=1),
    }
    week = period_tags(report, previous, n=1)
    assert week["judged"] == 3 and week["min_support"] == 30 and week["questions"] == 500
    (worst,) = week["worse"]
    assert worst["tag"] == "javascript" and worst["change"] == round(20 / 85 - 0.8, 4)
    assert worst["previous_f1"] == 0.8 and worst["previous_support"] == 60
    assert [t["tag"] for t in period_tags(report, previous)["worse"]] == [
        "javascript",
        "java",
        "python",
    ]
    assert period_tags(report, previous)["better"] == []
    java = period_tags(report, previous)["worse"][1]
    assert java["previous_f1"] is None  # last week's support 1: too little to compare
    better = TagReport(
        since,
        since,
        500,
        RULES,
        tag_table({"python": TagCounts("python", tp=90, fp=5, fn=5)}, BASELINES, RULES),
    )
    assert [t["tag"] for t in period_tags(better, {})["better"]] == ["python"]


def _renamed(questions: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    """The users' tags with ``old`` written as ``new`` (the issue's ``js`` rename)."""
    tags = [[new if t == old else t for t in ts] for ts in questions["tags"]]
    return questions.assign(tags=tags)


@pytest.mark.slow
def test_a_renamed_tag_is_red_in_latest_json_and_the_report(case: DriftCase) -> None:
    """Real held-out questions, all with feedback; on the second day the users write ``js``
    for ``javascript``: javascript's recall collapses and it comes first, red, with its
    support and the model's own baseline F1."""
    holdout, day0 = case.split.holdout, case.day0
    case.replay(holdout.iloc[:950], per_bin=950, feedback_every=1)
    case.replay(_renamed(holdout.iloc[950:1900], "javascript", "js"), per_bin=950,
                start=day0 + pd.Timedelta(days=1), feedback_every=1, prefix="r")  # fmt: skip
    result, _ = case.run(day0 + pd.Timedelta(days=2, hours=1), text_enabled=False)
    assert result.ok, result.error
    summary = json.loads((case.settings.reports_dir / "latest.json").read_text())
    tags = summary["tags"]
    first = tags[0]
    baseline = load_per_tag(case.settings.models_dir / "test")
    assert baseline is not None
    base_f1 = float(baseline.loc[baseline["tag"] == "javascript", "f1"].iloc[0])
    print(f"renamed javascript: {first}; baseline F1 {base_f1:.3f}")
    assert first["tag"] == "javascript" and first["status"] == "red"
    assert first["recall"] == 0.0 and first["support"] >= case.settings.tag_min_support
    assert first["baseline_f1"] == pytest.approx(base_f1, abs=1e-4)
    # the numbers TagQualityExplained compares with: the same served table
    served = served_per_tag(case.settings.models_dir, "latest")["javascript"]
    assert served["f1"] == pytest.approx(base_f1) and served["support"] > 0
    others = [t["tag"] for t in tags[1:] if t["status"] == "red"]
    assert len(others) <= 2, others
    assert summary["tags_period"]["questions_with_feedback"] == 950
    assert {"tag", "support", "precision", "recall", "f1", "baseline_f1", "status"} == set(first)
    report = (case.settings.reports_dir / "latest.html").read_text()
    assert report.index("tagwatch-tags") < report.index("tagwatch-summary")
