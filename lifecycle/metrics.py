"""Metrics of the lifecycle process (job "lifecycle", port 8003), on an injected registry.

The retrain CLI fills the same metrics in its own registry and pushes nothing: a one-off run's
numbers are in its MLflow run and its output; the service exports them.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

# suspicious: stopped before fitting by the feedback sanity checks; awaiting_approval: passed
# the gate under TAGWATCH_RETRAIN_POLICY=approve, registered, waiting for `lifecycle promote`
OUTCOMES = ("promoted", "rejected", "failed", "skipped", "suspicious", "awaiting_approval")
FEEDBACK_CHECKS = ("tag_share", "entropy", "agreement")
WEBHOOK_OUTCOMES = (
    "triggered",
    "debounced",
    "busy",
    "throttled",
    "not_enough_data",
    "ignored",
    "invalid",
    "unauthorized",
)
RETRAIN_REQUEST_OUTCOMES = ("started", "busy", "throttled", "unauthorized")


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry, process: bool = False) -> None:
        if process:
            ProcessCollector(registry=registry)
        self.runs = Counter(
            "tagwatch_retrain_runs",
            "Retrain runs by outcome: promoted, rejected (gate kept the champion), failed, "
            "skipped (too few labelled questions), suspicious (feedback sanity checks stopped "
            "it before fitting), awaiting_approval (passed the gate, policy approve).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.runs.labels(outcome)
        self.last_success = Gauge(
            "tagwatch_retrain_last_success_timestamp_seconds",
            "Unix time of the last retrain that reached a gate decision (promoted or rejected).",
            registry=registry,
        )
        self.last_duration = Gauge(
            "tagwatch_retrain_last_run_duration_seconds",
            "Duration of the last retrain run.",
            registry=registry,
        )
        self.champion_jaccard = Gauge(
            "tagwatch_gate_champion_jaccard_ratio",
            "Champion's mean Jaccard on the hold-out slice of the last gate.",
            registry=registry,
        )
        self.challenger_jaccard = Gauge(
            "tagwatch_gate_challenger_jaccard_ratio",
            "Challenger's mean Jaccard on the hold-out slice of the last gate.",
            registry=registry,
        )
        self.champion_coverage = Gauge(
            "tagwatch_gate_champion_coverage_ratio",
            "Champion's mean coverage on the hold-out slice of the last gate.",
            registry=registry,
        )
        self.challenger_coverage = Gauge(
            "tagwatch_gate_challenger_coverage_ratio",
            "Challenger's mean coverage on the hold-out slice of the last gate.",
            registry=registry,
        )
        self.holdout_rows = Gauge(
            "tagwatch_gate_holdout_questions",
            "Questions in the hold-out slice of the last gate.",
            registry=registry,
        )
        self.recovery = Gauge(
            "tagwatch_retrain_drift_recovery_ratio",
            "Share of the champion's validation-to-live Jaccard gap the challenger recovered at "
            "the last retrain (NaN: no gap). Low: concept drift suspected.",
            registry=registry,
        )
        self.recovery.set(math.nan)
        self.recovery_min = Gauge(
            "tagwatch_retrain_drift_recovery_min_ratio",
            "Recovery share below which concept drift is suspected (setting; the alert uses it).",
            registry=registry,
        )
        self.champion_version = Gauge(
            "tagwatch_champion_version",
            "Registry version number of the champion (0: none or registry unreachable).",
            registry=registry,
        )
        self.champion_created = Gauge(
            "tagwatch_champion_created_timestamp_seconds",
            "Unix time the champion version was registered (its age: time() - this).",
            registry=registry,
        )
        self.webhook = Counter(
            "tagwatch_lifecycle_webhook_requests",
            "Alertmanager webhook requests by outcome: triggered a retrain, debounced, busy "
            "(a retrain is running), throttled (a retrain started less than "
            "TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES ago), not_enough_data, ignored (no watched "
            "alert firing), invalid, unauthorized (no or a wrong bearer token).",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook.labels(outcome)
        self.retrain_running = Gauge(
            "tagwatch_retrain_running", "1 while a retrain runs.", registry=registry
        )
        # guarding the service and bounding its artefacts (issue 15, sections 3-4)
        self.retrain_requests = Counter(
            "tagwatch_lifecycle_retrain_requests",
            "POST /retrain requests by outcome: started, busy (a retrain is running), throttled "
            "(TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES), unauthorized (no or a wrong bearer token).",
            ["outcome"],
            registry=registry,
        )
        for outcome in RETRAIN_REQUEST_OUTCOMES:
            self.retrain_requests.labels(outcome)
        self.pruned_versions = Counter(
            "tagwatch_lifecycle_pruned_versions",
            "Registered versions whose model files were deleted (models/ and MLflow) and that "
            "were archived: beyond the champion, the previous one and the newest N.",
            registry=registry,
        )
        self.pruned_bytes = Counter(
            "tagwatch_lifecycle_pruned_bytes",
            "Bytes of model files deleted by pruning (local folders only).",
            registry=registry,
        )
        # trusting the loop (issue 15, sections 2 and 6): feedback sanity, approval policy
        self.feedback_check_value = Gauge(
            "tagwatch_retrain_feedback_check_value",
            "Feedback sanity checks of the last retrain, before fitting: tag_share (largest rise "
            "of one tag's share of questions over the champion's training labels), entropy "
            "(label entropy ratio to the champion's), agreement (drop of agreement with the "
            "champion's confident predictions). NaN: not measured.",
            ["check"],
            registry=registry,
        )
        self.feedback_check_threshold = Gauge(
            "tagwatch_retrain_feedback_check_threshold",
            "Threshold of each feedback sanity check (settings TAGWATCH_FEEDBACK_*): tag_share "
            "and agreement trip above it, entropy below it.",
            ["check"],
            registry=registry,
        )
        self.feedback_anomaly = Gauge(
            "tagwatch_retrain_feedback_anomaly",
            "1 when the check stopped the last checked retrain as suspicious feedback, 0 when it "
            "passed, NaN before any check. The retrain's reason names the tag and source.",
            ["check"],
            registry=registry,
        )
        for check in FEEDBACK_CHECKS:
            self.feedback_check_value.labels(check).set(math.nan)
            self.feedback_check_threshold.labels(check).set(math.nan)
            self.feedback_anomaly.labels(check).set(math.nan)
        self.awaiting_approval = Gauge(
            "tagwatch_challenger_awaiting_approval_version",
            "Registry version of a challenger that passed every check under the approve policy "
            "and waits for `python -m lifecycle promote` (0: none).",
            registry=registry,
        )
