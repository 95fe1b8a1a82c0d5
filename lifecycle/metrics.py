"""Metrics of the lifecycle process (job "lifecycle", port 8003), on an injected registry.

The retrain CLI fills the same metrics in its own registry and pushes nothing: a one-off run's
numbers are in its MLflow run and its output; the service exports them.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

OUTCOMES = ("promoted", "rejected", "failed", "skipped")
WEBHOOK_OUTCOMES = ("triggered", "debounced", "busy", "not_enough_data", "ignored", "invalid")


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry, process: bool = False) -> None:
        if process:
            ProcessCollector(registry=registry)
        self.runs = Counter(
            "tagwatch_retrain_runs",
            "Retrain runs by outcome: promoted, rejected (gate kept the champion), failed, "
            "skipped (too few labelled questions).",
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
            "(a retrain is running), not_enough_data, ignored (no watched alert firing), invalid.",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook.labels(outcome)
        self.retrain_running = Gauge(
            "tagwatch_retrain_running", "1 while a retrain runs.", registry=registry
        )
