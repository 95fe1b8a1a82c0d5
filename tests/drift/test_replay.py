"""Real questions replayed through the store and the job: same period stays green, later is red.

Bins hold ~1,000 questions (one replayed day each); the last, partial day is the run's
current day and is never judged.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from prometheus_client import CollectorRegistry

from drift.job import run_once
from drift.metrics import DriftMetrics
from drift.settings import DriftSettings
from store import SQLiteStore
from tagger.columns import FEATURE_COLUMNS
from tagger.train import Split

NUMERIC_AND_TAG = FEATURE_COLUMNS


def _status(registry: CollectorRegistry, feature: str) -> float | None:
    return registry.get_sample_value("tagwatch_drift_feature_status", {"feature": feature})


def test_same_period_holdout_stays_green(
    drift_settings: DriftSettings,
    store: SQLiteStore,
    replayer: Callable[..., int],
    split: Split,
    day0: pd.Timestamp,
) -> None:
    holdout = split.holdout
    assert len(holdout) > 1900  # two full days of 950 and a partial current day
    replayer(store, holdout, per_bin=950, feedback_every=2)
    registry = CollectorRegistry()
    now = day0 + pd.Timedelta(days=2, hours=12)
    result = run_once(drift_settings, DriftMetrics(registry), now=now)

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
    latest = (drift_settings.reports_dir / "latest.html").read_text()
    dated = (drift_settings.reports_dir / f"{now.date().isoformat()}.html").read_text()
    assert latest == dated and "top_tag" in latest and "oov_ratio" in latest
    assert "ref_max_prob_diff" in latest and len(latest) < 1_000_000  # opens in a browser


def _later(split: Split, year: int, n: int) -> pd.DataFrame:
    later = split.later
    return later.loc[later["created_at"].dt.year == year].iloc[:n]


def test_2019_questions_are_red_on_oov_and_top_tag(
    drift_settings: DriftSettings,
    store: SQLiteStore,
    replayer: Callable[..., int],
    split: Split,
    day0: pd.Timestamp,
) -> None:
    replayer(store, _later(split, 2019, 3500), per_bin=1000)
    registry = CollectorRegistry()
    result = run_once(
        drift_settings, DriftMetrics(registry), now=day0 + pd.Timedelta(days=3, hours=12)
    )
    assert result.ok, result.error
    assert result.bins_judged == 3
    for feature in ("oov_ratio", "top_tag"):
        assert result.statuses[feature][0] == 2, (feature, result.values)
        assert _status(registry, feature) == 2
        assert (
            registry.get_sample_value("tagwatch_drift_feature_red_tests", {"feature": feature}) == 1
        )
    # no feedback in this replay: the feedback feature is not judged and has no series
    assert _status(registry, "unknown_feedback_tags_ratio") is None
    # question length did not drift between 2011 and 2019
    assert result.statuses["title_chars"][0] == 0


def test_2020_questions_are_red_on_oov_and_top_tag(
    drift_settings: DriftSettings,
    store: SQLiteStore,
    replayer: Callable[..., int],
    split: Split,
    day0: pd.Timestamp,
) -> None:
    replayer(store, _later(split, 2020, 3500), per_bin=1000, feedback_every=2)
    registry = CollectorRegistry()
    result = run_once(
        drift_settings, DriftMetrics(registry), now=day0 + pd.Timedelta(days=3, hours=12)
    )
    assert result.ok, result.error
    assert result.bins_judged == 3
    for feature in ("oov_ratio", "top_tag"):
        assert result.statuses[feature][0] == 2, (feature, result.values)
        assert _status(registry, feature) == 2
    # user tags moved away from the vocabulary (0.70 unknown against 0.585 in validation)
    assert result.values["unknown_feedback_tags_ratio"] > 0.64
    assert result.statuses["unknown_feedback_tags_ratio"][0] >= 1
