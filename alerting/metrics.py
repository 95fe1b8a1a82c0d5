"""Metrics of the weekly summary process (job "weekly", port 8002), on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WeeklyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "tagwatch_weekly_last_success_timestamp_seconds",
            "Unix time of the last weekly summary written and sent.",
            registry=registry,
        )
        self.runs = Counter(
            "tagwatch_weekly_runs", "Weekly summary runs started.", registry=registry
        )
        self.failures = Counter(
            "tagwatch_weekly_failures",
            "Weekly summary runs that failed (store, rendering or SMTP after retries).",
            registry=registry,
        )
        self.emails_sent = Counter(
            "tagwatch_weekly_emails_sent",
            "Weekly summary emails accepted by SMTP.",
            registry=registry,
        )
        self.missing_sections = Gauge(
            "tagwatch_weekly_missing_sections",
            "Sections of the last weekly summary left empty (Prometheus or store down).",
            registry=registry,
        )
        self.last_run_duration = Gauge(
            "tagwatch_weekly_last_run_duration_seconds",
            "Duration of the last weekly summary run.",
            registry=registry,
        )
