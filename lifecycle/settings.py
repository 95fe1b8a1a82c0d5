"""Settings of the lifecycle process and CLI (``TAGWATCH_`` environment prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tagger.settings import TagwatchSettings


class LifecycleSettings(TagwatchSettings):
    """Retraining window, hold-out, gate rules, schedule and webhook; built once per process.

    Each gate rule has its own switch (``gate_require_*``) so one can be turned off without
    touching the others.
    """

    store_url: str = "sqlite:///var/tagwatch.sqlite3"
    # training set: questions with feedback served in the last N days (or --since/--until)
    retrain_window_days: float = 90.0
    retrain_with_original: bool = False
    retrain_k: int = 100
    # at least this many labelled questions in the window, or the retrain is skipped
    retrain_min_labelled: int = 500
    # hold-out: the most recent slice by time; a share of the window, or N days when set
    holdout_share: float = 0.2
    holdout_days: float | None = None
    # decision-rule tuning slice, just before the hold-out (share of what remains)
    tuning_share: float = 0.15
    # the gate
    gate_require_jaccard_gain: bool = True
    gate_min_jaccard_gain: float = 0.01
    gate_require_coverage: bool = True
    gate_max_coverage_drop: float = 0.0
    gate_require_min_rows: bool = True
    gate_min_holdout_rows: int = 200
    # share of the validation→live Jaccard gap the challenger must recover to call it data drift
    concept_drift_min_recovery: float = 0.5
    # --- trusting the loop (issue 15, sections 2 and 6; README "Trusting the loop") ---
    # the gain must hold beyond noise: the lower bound of its paired-bootstrap interval over the
    # hold-out's questions (seeded) must be above gate_min_jaccard_gain
    gate_confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    gate_bootstrap_resamples: int = Field(default=2000, ge=100, le=100_000)
    # the anchor: the challenger's Jaccard on the champion's canary set (real questions with
    # their true tags kept in the artefact) must reach this share of the reference Jaccard
    gate_require_canary: bool = True
    gate_canary_min_ratio: float = Field(default=0.3, ge=0.0, le=1.0)
    # per-tag check (issue 17; docs/lifecycle.md): no tag given or predicted on at least
    # N questions of the hold-out may lose more than X F1 (bootstrap noise at 50 questions is
    # about 0.09 F1, the honest retrain's worst drop there 0.07)
    gate_tag_check: bool = True
    gate_tag_min_support: int = Field(default=50, ge=1)
    gate_tag_max_f1_drop: float = Field(default=0.2, gt=0.0, le=1.0)
    # feedback sanity before fitting, against the champion's label profile (unset: check off)
    feedback_max_tag_share_rise: float | None = Field(default=0.15, gt=0.0)
    feedback_min_entropy_ratio: float | None = Field(default=0.7, gt=0.0)
    feedback_max_agreement_drop: float | None = Field(default=0.2, gt=0.0)
    feedback_min_confident_rows: int = Field(default=50, ge=1)
    # promotion: auto (when every check passes), approve (register, alert ChallengerAwaiting-
    # Approval, wait for `python -m lifecycle promote`) or never; webhook retrains have their own
    retrain_policy: Literal["auto", "approve", "never"] = "auto"
    retrain_webhook_policy: Literal["auto", "approve", "never"] = "approve"
    # the service: schedule (UTC crontab, weekly by default), webhook, HTTP
    retrain_cron: str = "0 3 * * 0"
    webhook_alerts: tuple[str, ...] = ("DataDriftDetected", "JaccardLow")
    webhook_debounce_seconds: float = 3600.0
    webhook_min_new_labelled: int = 500
    misfire_grace_seconds: int = 3600
    host: str = "127.0.0.1"
    port: int = 8003
    # --- guarding the service and bounding its artefacts (issue 15, sections 3-4) ---
    # POST /retrain and /webhook need "Authorization: Bearer <token>", the token read from this
    # file (Alertmanager sends it: alerting's lifecycle receiver). Without one the service refuses
    # to start, unless lifecycle_auth is "open" (anyone who reaches the port starts retrains)
    lifecycle_token_file: Path | None = None
    lifecycle_auth: Literal["token", "open"] = "token"
    # at most one retrain per this many minutes, whatever started it (webhook, POST /retrain,
    # cron, CLI; across processes); one stopped before fitting (too little data, suspicious
    # feedback) does not count. 0: off
    retrain_min_interval_minutes: float = Field(default=15.0, ge=0)
    # after each retrain (and `python -m lifecycle prune`): keep the champion, the previous
    # champion, what models/LATEST names and the newest N other versions; prune the rest
    keep_challengers: int = Field(default=3, ge=0)

    @field_validator("holdout_days")
    @classmethod
    def _positive_days(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be greater than 0 (unset: use holdout_share)")
        return v

    @field_validator("holdout_share", "tuning_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError("must be between 0 and 1 (exclusive)")
        return v

    @field_validator("retrain_window_days", "webhook_debounce_seconds")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must not be negative")
        return v

    @field_validator("retrain_k", "retrain_min_labelled", "gate_min_holdout_rows")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v
