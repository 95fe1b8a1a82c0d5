"""Every metric of the drift process, built against an injected registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from tagger.columns import FEATURE_COLUMNS

# "text": the ROC AUC of a classifier telling the bin's titles from the baseline's (drift/text.py)
FEATURES = (*FEATURE_COLUMNS, "unknown_feedback_tags_ratio", "text")


class DriftMetrics:
    """The ``tagwatch_drift_*`` metrics; labels are feature names only (bounded)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.feature_status = Gauge(
            "tagwatch_drift_feature_status",
            "Worst traffic light of the latest judged bin (0 green, 1 yellow, 2 red).",
            ["feature"],
            registry=registry,
        )
        self.feature_red_tests = Gauge(
            "tagwatch_drift_feature_red_tests",
            "Red traffic lights of the feature in the latest judged bin.",
            ["feature"],
            registry=registry,
        )
        self.feature_yellow_tests = Gauge(
            "tagwatch_drift_feature_yellow_tests",
            "Yellow traffic lights of the feature in the latest judged bin.",
            ["feature"],
            registry=registry,
        )
        self.feature_effect_size = Gauge(
            "tagwatch_drift_feature_effect_size",
            "Measured effect size of the latest judged bin against the held-out validation "
            "questions: largest change of one histogram bar's share (max_prob_diff); for "
            "unknown_feedback_tags_ratio the rise of the unknown-tag share; for text the ROC "
            "AUC of a classifier telling the bin's titles from the baseline's.",
            ["feature"],
            registry=registry,
        )
        self.feature_threshold = Gauge(
            "tagwatch_drift_feature_threshold",
            "Effect size from which the feature turns yellow or red (the rule).",
            ["feature", "level"],
            registry=registry,
        )
        self.rows_analysed = Gauge(
            "tagwatch_drift_rows_analysed",
            "Predictions in the judged bins of the window at the last run.",
            registry=registry,
        )
        self.bins_judged = Gauge(
            "tagwatch_drift_bins_judged",
            "Time bins judged at the last run (complete, with enough rows).",
            registry=registry,
        )
        self.latest_bin_timestamp = Gauge(
            "tagwatch_drift_latest_bin_timestamp_seconds",
            "Start of the latest judged bin (0: none).",
            registry=registry,
        )
        self.last_success = Gauge(
            "tagwatch_drift_last_success_timestamp_seconds",
            "End of the last run that finished without error (0: none yet).",
            registry=registry,
        )
        self.last_duration = Gauge(
            "tagwatch_drift_last_run_duration_seconds",
            "Duration of the last run, successful or not.",
            registry=registry,
        )
        self.alert_posts = Counter(
            "tagwatch_drift_alert_posts",
            "DriftExplained and TagQualityExplained checks of Alertmanager (drift/notify.py) "
            "by outcome: sent (words, tags or questions posted beside active drift or "
            "TagQualityLow alerts), idle (none active, or no judged bin), failed (Alertmanager "
            "unreachable or refused, the store unreadable).",
            ["outcome"],
            registry=registry,
        )
        self.runs = Counter("tagwatch_drift_runs", "Drift runs started.", registry=registry)
        self.failures = Counter(
            "tagwatch_drift_failures", "Drift runs that failed.", registry=registry
        )

    def set_statuses(self, worst: Mapping[str, tuple[int, int, int]]) -> None:
        """``worst[feature] = (status, red, yellow)``; features not judged lose their series."""
        for feature in FEATURES:
            if feature in worst:
                status, red, yellow = worst[feature]
                self.feature_status.labels(feature=feature).set(status)
                self.feature_red_tests.labels(feature=feature).set(red)
                self.feature_yellow_tests.labels(feature=feature).set(yellow)
            else:
                self.clear(feature)

    def set_effects(
        self, effects: Mapping[str, float], thresholds: Mapping[str, tuple[float, float]]
    ) -> None:
        """Effect size of each judged feature and its (yellow, red) thresholds."""
        for feature in FEATURES:
            if feature in effects:
                self.feature_effect_size.labels(feature=feature).set(effects[feature])
                yellow, red = thresholds[feature]
                self.feature_threshold.labels(feature=feature, level="yellow").set(yellow)
                self.feature_threshold.labels(feature=feature, level="red").set(red)
            else:
                self._clear_effects(feature)

    def _clear_effects(self, feature: str) -> None:
        with contextlib.suppress(KeyError):
            self.feature_effect_size.remove(feature)
        for level in ("yellow", "red"):
            with contextlib.suppress(KeyError):
                self.feature_threshold.remove(feature, level)

    def clear(self, feature: str) -> None:
        for gauge in (self.feature_status, self.feature_red_tests, self.feature_yellow_tests):
            with contextlib.suppress(KeyError):
                gauge.remove(feature)
        self._clear_effects(feature)

    def clear_all(self, features: Iterable[str] = FEATURES) -> None:
        for feature in features:
            self.clear(feature)
