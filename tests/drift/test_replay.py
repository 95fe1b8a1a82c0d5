"""Real questions replayed through the store and the job: same period stays green, later is red.

Bins hold ~1,000 questions (one replayed day each); the last, partial day is the run's
current day and is never judged.
"""

from __future__ import annotations

import json

import pandas as pd
from prometheus_client import CollectorRegistry

from drift.job import RunResult
from tagger.columns import FEATURE_COLUMNS
from tests.drift.conftest import DriftCase
from tests.processes import NEW_TAGS, NEW_WORDS

NUMERIC_AND_TAG = FEATURE_COLUMNS


def _status(registry: CollectorRegistry, feature: str) -> float | None:
    return registry.get_sample_value("tagwatch_drift_feature_status", {"feature": feature})


def test_same_period_holdout_stays_green(case: DriftCase) -> None:
    holdout, day0 = case.split.holdout, case.day0
    assert len(holdout) > 1900  # two full days of 950 and a partial current day
    case.replay(holdout, per_bin=950, feedback_every=2)
    now = day0 + pd.Timedelta(days=2, hours=12)
    result, registry = case.run(now)

    assert result.ok, result.error
    assert result.bins_judged == 2 and result.rows_analysed == 1900
    assert result.latest_bin == day0 + pd.Timedelta(days=1)
    for feature in NUMERIC_AND_TAG:
        assert result.statuses[feature][0] < 2, (feature, result.values)
        assert _status(registry, feature) == result.statuses[feature][0]
        assert (
            registry.get_sample_value("tagwatch_drift_feature_red_tests", {"feature": feature}) == 0
        )
    # same period, tags the model never fitted on: the unknown share matches the card's
    assert result.statuses["unknown_feedback_tags_ratio"][0] == 0
    assert abs(result.values["unknown_feedback_tags_ratio"] - 0.585) < 0.05
    assert registry.get_sample_value("tagwatch_drift_bins_judged") == 2
    assert registry.get_sample_value("tagwatch_drift_rows_analysed") == 1900
    assert registry.get_sample_value("tagwatch_drift_latest_bin_timestamp_seconds") == (
        (day0 + pd.Timedelta(days=1)).timestamp()
    )
    assert registry.get_sample_value("tagwatch_drift_failures_total") == 0
    latest = (case.settings.reports_dir / "latest.html").read_text()
    # the titles read like the baseline's: text green, in the metrics and latest.json too
    assert result.statuses["text"][0] == 0 and result.values["text"] < 0.56, result.values
    assert _status(registry, "text") == 0
    summary = json.loads((case.settings.reports_dir / "latest.json").read_text())
    assert summary["text"]["status"] == "green" and summary["features"]["text"]["status"] == "green"
    assert result.report_path is not None
    dated = result.report_path.read_text()
    assert latest == dated and "top_tag" in latest and "oov_ratio" in latest
    assert "ref_max_prob_diff" in latest and len(latest) < 1_000_000  # opens in a browser


def _red_on_oov_and_top_tag(
    case: DriftCase, year: int, feedback_every: int = 0
) -> tuple[RunResult, CollectorRegistry]:
    """Three replayed days of ``year``'s questions, judged: red on oov_ratio and top_tag."""
    case.replay(case.later(year).iloc[:3500], per_bin=1000, feedback_every=feedback_every)
    result, registry = case.run(case.day0 + pd.Timedelta(days=3, hours=12))
    assert result.ok, result.error
    assert result.bins_judged == 3
    for feature in ("oov_ratio", "top_tag"):
        assert result.statuses[feature][0] == 2, (feature, result.values)
        assert _status(registry, feature) == 2
    return result, registry


def test_2019_questions_are_red_on_oov_and_top_tag(case: DriftCase) -> None:
    result, registry = _red_on_oov_and_top_tag(case, 2019)
    for feature in ("oov_ratio", "top_tag"):
        assert (
            registry.get_sample_value("tagwatch_drift_feature_red_tests", {"feature": feature}) == 1
        )
    # no feedback in this replay: the feedback feature is not judged and has no series
    assert _status(registry, "unknown_feedback_tags_ratio") is None
    # question length did not drift between 2011 and 2019
    assert result.statuses["title_chars"][0] == 0


def test_2020_questions_are_red_on_oov_and_top_tag(case: DriftCase) -> None:
    result, registry = _red_on_oov_and_top_tag(case, 2020, feedback_every=2)
    # what changed, named: the text is red, with the words, the questions and the new tags
    assert result.statuses["text"][0] == 2 and result.values["text"] > 0.7, result.values
    assert _status(registry, "text") == 2
    summary = json.loads((case.settings.reports_dir / "latest.json").read_text())
    words = [w["word"] for w in summary["text"]["current_words"]]
    tags = [t["tag"] for t in summary["unknown_tags"][:15]]
    print(f"2020 bin: text AUC {summary['text']['auc']}; words {words}; new tags {tags}")
    assert len(NEW_WORDS & set(words)) >= 3, words
    assert len(NEW_TAGS & set(tags)) >= 5, tags
    assert len(summary["text"]["typical_questions"]) == 10
    assert summary["oov_words"] and summary["features"]["oov_ratio"]["status"] == "red"
    report = (case.settings.reports_dir / "latest.html").read_text()
    first = report.index("tagwatch-what-changed")
    assert first < report.index("tagwatch-summary") and words[0] in report[first:]
    # user tags moved away from the vocabulary (0.70 unknown against 0.585 in validation)
    assert result.values["unknown_feedback_tags_ratio"] > 0.64
    assert result.statuses["unknown_feedback_tags_ratio"][0] >= 1
