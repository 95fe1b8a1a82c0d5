"""``python -m lifecycle retrain``: train a challenger on recent feedback, gate it, maybe promote.

Reads the questions that users labelled (``/feedback`` tags) within a window from the store,
holds out the most recent slice, fits a challenger on the rest (the K most frequent tags of the
window), scores champion and challenger on exactly that slice, and promotes the challenger only
when the gate's rules hold. Every decision and its numbers go to the challenger's MLflow run
(tags ``decision``, ``reason``) and to the lifecycle metrics; the output ends with one summary
line.

Feedback is written by clients, so nothing it says is taken on trust: too little or degenerate
data ends as "skipped" before anything is fitted; the window's labels are compared with the
champion's (``lifecycle.sanity``) and a suspicious window stops the retrain before fitting; the
gate wants the gain beyond bootstrap noise and no collapse on the champion's trusted canary set
(``lifecycle.gate``); and the promotion policy (auto, approve, never) decides what a challenger
that passes everything becomes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import CollectorRegistry

from lifecycle.dataset import DatasetError, RetrainData, build_dataset
from lifecycle.gate import (
    AnchorCheck,
    GateDecision,
    GateRules,
    TagComparison,
    compare_tags,
    comparison_frame,
    decide,
    drift_verdict,
    judged_tags,
    paired_bootstrap,
    recovery_share,
)
from lifecycle.lock import admit
from lifecycle.metrics import LifecycleMetrics
from lifecycle.prune import prune_after_retrain
from lifecycle.sanity import SanityReport, SanityRules, check_feedback
from lifecycle.settings import LifecycleSettings
from lifecycle.vocabulary import describe_change
from store import PredictionStore, StoreError, open_store
from tagger.data import DataError, load_questions
from tagger.train import DEFAULT_CUTOFF, TrainConfig, evaluate, question_jaccards

if TYPE_CHECKING:
    from lifecycle.registry import Registry
    from tagger.model import TagModel
    from tagger.tracking import RegisteredVersion
    from tagger.train import TrainResult

log = logging.getLogger("lifecycle.retrain")

ACTOR = "lifecycle-gate"
FAILED, SKIPPED = "failed", "skipped"
SUSPICIOUS, AWAITING = "suspicious", "awaiting_approval"
DECIDED = ("promoted", "rejected", AWAITING)  # reached a gate decision
TAGS_SHOWN = 5  # worst tags of the per-tag comparison in the outcome's JSON and the card
COMPARISON_FILE = "per_tag_comparison.csv"


@dataclass(frozen=True)
class Champion:
    """The served model with what the gate trusts: its card and its canary set."""

    model: TagModel
    card: dict[str, Any]
    canary: pd.DataFrame | None


@dataclass
class RetrainOutcome:
    """What one retrain did; ``line()`` is the summary shown in logs, the demo and emails."""

    outcome: str  # promoted | rejected | failed | skipped | suspicious | awaiting_approval
    reason: str
    since: pd.Timestamp
    until: pd.Timestamp
    data: dict[str, int] = field(default_factory=dict)
    champion_version: int | None = None
    challenger_version: int | None = None
    challenger_artefact: str | None = None
    champion: dict[str, float] | None = None
    challenger: dict[str, float] | None = None
    champion_validation_jaccard: float | None = None
    recovery: float | None = None
    verdict: str = ""
    # the tags the challenger adds to the vocabulary and drops (lifecycle/vocabulary.py)
    vocabulary: str = ""
    run_id: str | None = None
    duration_seconds: float = 0.0
    source: str = "cli"  # what started it: cli, schedule, manual, webhook <alerts>
    policy: str = "auto"
    gain: dict[str, float] | None = None  # the bootstrap interval of the Jaccard gain
    anchor: dict[str, float] | None = None  # both models on the trusted canary set
    feedback: list[dict[str, Any]] = field(default_factory=list)  # the sanity checks
    # both models per tag on the hold-out, worst F1 drop first (the gate's per-tag check): all
    # of it goes to MLflow as per_tag_comparison.csv; ``tags``: the worst TAGS_SHOWN of those
    # with enough support to be judged
    tag_comparison: list[TagComparison] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        if self.challenger is None:
            return f"retrain {self.outcome}: {self.reason}"
        rows = int(self.challenger.get("rows", 0))
        if self.outcome == "promoted":
            head = f"retrain promoted v{self.challenger_version}"
            head += f" over v{self.champion_version}" if self.champion_version else ""
        elif self.outcome == AWAITING:
            head = f"retrain awaiting approval: v{self.challenger_version} passed every check"
            head += f", champion v{self.champion_version} kept" if self.champion_version else ""
        else:
            head = f"retrain {self.outcome}: v{self.challenger_version} not promoted"
            head += f", champion v{self.champion_version} kept" if self.champion_version else ""
        champ = self.champion
        if champ is None:
            return f"{head}: Jaccard {self.challenger['jaccard']:.3f} on {rows} held-out questions"
        scores = (
            f"Jaccard on the {rows} latest labelled questions {champ['jaccard']:.3f} -> "
            f"{self.challenger['jaccard']:.3f}, coverage {champ['coverage']:.3f} -> "
            f"{self.challenger['coverage']:.3f}"
        )
        why = "" if self.outcome == "promoted" else f"; why: {self.reason}"
        vocabulary = (
            f"; {self.vocabulary}" if self.vocabulary and self.vocabulary not in why else ""
        )
        return f"{head}: {scores}{why}; {self.verdict}{vocabulary}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "data": self.data,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "challenger_artefact": self.challenger_artefact,
            "champion": self.champion,
            "challenger": self.challenger,
            "recovery": self.recovery,
            "verdict": self.verdict,
            "vocabulary": self.vocabulary,
            "run_id": self.run_id,
            "duration_seconds": round(self.duration_seconds, 1),
            "source": self.source,
            "policy": self.policy,
            "gain": self.gain,
            "anchor": self.anchor,
            "feedback": self.feedback,
            "tags": self.tags,
        }


def default_window(
    settings: LifecycleSettings, now: pd.Timestamp | None = None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    until = pd.Timestamp.now(tz="UTC") if now is None else now
    return until - pd.Timedelta(days=settings.retrain_window_days), until


def _frame_sha256(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for row in zip(
        df["created_at"].astype(str), df["title"], df["tags"].map(" ".join), strict=True
    ):
        h.update("\x1f".join(row).encode())
    return h.hexdigest()


def _original(settings: LifecycleSettings) -> pd.DataFrame:
    """The default model's training questions (before its cut-off)."""
    df = load_questions(settings.titles_path)
    return df.loc[df["created_at"] < DEFAULT_CUTOFF]


def _record(metrics: LifecycleMetrics, out: RetrainOutcome) -> None:
    metrics.runs.labels(out.outcome).inc()
    metrics.last_duration.set(out.duration_seconds)
    if out.outcome in DECIDED:
        metrics.last_success.set(time.time())
    _record_trust(metrics, out)
    if out.challenger is not None:
        metrics.challenger_jaccard.set(out.challenger["jaccard"])
        metrics.challenger_coverage.set(out.challenger["coverage"])
        metrics.holdout_rows.set(out.challenger.get("rows", 0))
        metrics.recovery.set(float("nan") if out.recovery is None else out.recovery)
    if out.champion is not None:
        metrics.champion_jaccard.set(out.champion["jaccard"])
        metrics.champion_coverage.set(out.champion["coverage"])


def _record_trust(metrics: LifecycleMetrics, out: RetrainOutcome) -> None:
    """Feedback checks (FeedbackAnomaly) and the challenger waiting for approval."""
    for check in out.feedback:
        metrics.feedback_check_value.labels(check["check"]).set(check["value"])
        metrics.feedback_check_threshold.labels(check["check"]).set(check["threshold"])
        metrics.feedback_anomaly.labels(check["check"]).set(1.0 if check["failed"] else 0.0)
    if out.outcome == AWAITING and out.challenger_version is not None:
        metrics.awaiting_approval.set(out.challenger_version)
    elif out.outcome in DECIDED:  # a newer decision replaces the one that waited
        metrics.awaiting_approval.set(0)


def _log_decision_only(settings: LifecycleSettings, out: RetrainOutcome) -> str | None:
    """A run without a model (skipped, or failed before a challenger existed): the decision."""
    try:
        from mlflow import MlflowClient

        from tagger.tracking import configure_mlflow

        experiment_id = configure_mlflow(settings)
        client = MlflowClient()
        run = client.create_run(
            experiment_id,
            tags={
                "kind": "retrain",
                "decision": out.outcome,
                "reason": out.reason[:5000],
                "mlflow.runName": f"retrain {out.outcome}",
            },
        )
        client.log_param(run.info.run_id, "window_since", out.since.isoformat())
        client.log_param(run.info.run_id, "window_until", out.until.isoformat())
        for key, value in out.data.items():
            client.log_metric(run.info.run_id, f"rows_{key}", float(value))
        client.set_terminated(run.info.run_id, "FAILED" if out.outcome == FAILED else "FINISHED")
        return str(run.info.run_id)
    except Exception as exc:  # MLflow down must not hide the retrain's own outcome
        log.warning("could not log the %s retrain to MLflow: %s", out.outcome, exc)
        return None


def retrain(
    settings: LifecycleSettings,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    with_original: bool | None = None,
    store: PredictionStore | None = None,
    metrics: LifecycleMetrics | None = None,
    promote: bool = True,
    source: str = "cli",
) -> RetrainOutcome:
    """One retrain. Never raises: failures are logged, counted and returned as "failed".

    One at a time across processes, at most one per TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES
    (lifecycle/lock.py): a retrain refused for either is "skipped" (the reason says which), and
    nothing is recorded in MLflow. A retrain that reached a decision prunes old artefacts.
    """
    t0 = time.perf_counter()
    metrics = metrics or LifecycleMetrics(CollectorRegistry())
    d_since, d_until = default_window(settings)
    out = RetrainOutcome(
        FAILED, "", since if since is not None else d_since, until or d_until, source=source
    )
    try:
        with admit(settings, source) as admission:
            if admission.admitted:
                _run_admitted(settings, out, with_original, store, metrics, promote)
                # stopped before any fit (too little data, suspicious feedback): not counted
                admission.counts = out.outcome not in (SKIPPED, SUSPICIOUS)
            else:
                out.outcome, out.reason = SKIPPED, admission.reason
    except StoreError as exc:  # the lock's own store is unreachable: nothing ran
        out.outcome, out.reason = FAILED, str(exc).splitlines()[0][:500]
        log.error("retrain failed: %s", out.reason)
    out.duration_seconds = time.perf_counter() - t0
    _record(metrics, out)
    log.info("%s (%.1f s)", out.line(), out.duration_seconds)
    return out


def _run_admitted(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    with_original: bool | None,
    store: PredictionStore | None,
    metrics: LifecycleMetrics,
    promote: bool,
) -> None:
    """The retrain itself, holding the retrain lock; then the artefacts beyond the kept ones go."""
    metrics.retrain_running.set(1)
    try:
        _retrain(settings, out, with_original, store, promote)
    except Exception as exc:
        out.outcome = FAILED
        out.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.exception("retrain failed: %s", out.reason)
        if out.run_id is None:
            out.run_id = _log_decision_only(settings, out)
    finally:
        metrics.retrain_running.set(0)
    if out.challenger_version is not None:  # a version was registered: prune the old ones
        prune_after_retrain(settings, metrics)


def _retrain(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    with_original: bool | None,
    store: PredictionStore | None,
    promote: bool,
) -> None:
    """The retrain's steps in order, filling ``out`` as they go: a failure keeps what is known.

    Everything that can stop it without a model (too little or degenerate data, suspicious
    feedback) is checked before anything is fitted.
    """
    from lifecycle.registry import Registry

    out.policy = _policy(settings, out.source, promote)
    labelled = _read_labelled(settings, out, store)
    out.data = {"labelled": len(labelled)}
    if len(labelled) < settings.retrain_min_labelled:
        reason = (
            f"not enough data: {len(labelled)} labelled questions between "
            f"{out.since:%Y-%m-%d %H:%M} and {out.until:%Y-%m-%d %H:%M} UTC, fewer than "
            f"{settings.retrain_min_labelled}"
        )
        _skip(settings, out, reason)
        return
    use_original = settings.retrain_with_original if with_original is None else with_original
    try:
        data = _dataset(settings, labelled, use_original)
    except DatasetError as exc:
        _skip(settings, out, f"not enough data: {exc}")
        return
    out.data = data.summary()

    registry = Registry(settings)
    champion = _load_champion(settings, registry, out)
    if champion is not None:
        report = _check_feedback(settings, out, data, champion)
        if report is not None and report.suspicious:
            out.outcome, out.reason = SUSPICIOUS, report.reason()
            out.run_id = _log_decision_only(settings, out)
            log.warning("retrain stopped before fitting: %s", out.reason)
            return
    _fit_judge_register(settings, out, data, use_original, champion, registry)


def _policy(settings: LifecycleSettings, source: str, promote: bool) -> str:
    """What a challenger that passes every check becomes: auto, approve or never."""
    if not promote:
        return "never"
    if source.startswith("webhook"):
        return settings.retrain_webhook_policy
    return settings.retrain_policy


def _fit_judge_register(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    data: RetrainData,
    use_original: bool,
    champion: Champion | None,
    registry: Registry,
) -> None:
    """Fit the challenger, gate it, register it; promote it when the gate and policy allow."""
    from tagger.train import write_result

    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    result = _fit_challenger(settings, out, data, use_original, version, champion)
    rules = GateRules.from_settings(settings)
    gate = _judge(settings, out, result.model, champion, data.holdout, rules)
    result.card["gate"] = _gate_card(out)
    artefact_dir = write_result(result, settings.models_dir, set_latest=False)
    registered = _log_challenger(
        settings, out, data, use_original, rules, gate, result, artefact_dir, version
    )
    out.run_id = registered.run_id
    out.challenger_version = registered.version
    out.challenger_artefact = registered.artefact_version
    _log_gate_metrics(out)
    _log_tag_comparison(out)
    if out.outcome == "promoted":
        registry.promote(registered.version, f"retrain gate: {gate.reason}", ACTOR)
    elif out.outcome == AWAITING:
        out.reason += (
            f"; to promote it: python -m lifecycle promote --version {registered.version} "
            "--reason '<why>'"
        )


def _read_labelled(
    settings: LifecycleSettings, out: RetrainOutcome, store: PredictionStore | None
) -> pd.DataFrame:
    """The window's labelled questions; a store opened here is closed here."""
    own = store is None
    store = open_store(settings.store_url) if store is None else store
    try:
        df = store.labelled(out.since.timestamp(), out.until.timestamp())
        # rows past TAGWATCH_RETENTION_DAYS keep features and feedback, not their text (a
        # served title is never empty): nothing to learn from
        return df[df["title"] != ""].reset_index(drop=True)
    finally:
        if own:
            store.close()


def _skip(settings: LifecycleSettings, out: RetrainOutcome, reason: str) -> None:
    """Too little data is a decision too: record it in MLflow without a model."""
    out.outcome, out.reason = SKIPPED, reason
    out.run_id = _log_decision_only(settings, out)


def _dataset(
    settings: LifecycleSettings, labelled: pd.DataFrame, use_original: bool
) -> RetrainData:
    """Train, tuning and held-out slices of the window (plus the original questions if asked);
    a hold-out under the gate's minimum is not enough data (checked before any fit)."""
    return build_dataset(
        labelled,
        k=settings.retrain_k,
        holdout_share=settings.holdout_share,
        holdout_days=settings.holdout_days,
        tuning_share=settings.tuning_share,
        original=_original(settings) if use_original else None,
        min_holdout=settings.gate_min_holdout_rows if settings.gate_require_min_rows else None,
    )


def _load_champion(
    settings: LifecycleSettings, registry: Registry, out: RetrainOutcome
) -> Champion | None:
    """The champion's model, card and canary set (None: no champion)."""
    from tagger.artefact import load_artefact, load_canary

    champion_ref = registry.champion()
    if champion_ref is None:
        return None
    path = registry.fetch(champion_ref, settings.models_dir)
    artefact = load_artefact(path.parent, path.name)
    out.champion_version = champion_ref.version
    out.champion_validation_jaccard = float(artefact.card["validation"]["jaccard"])
    return Champion(artefact.model, artefact.card, load_canary(path))


def _check_feedback(
    settings: LifecycleSettings, out: RetrainOutcome, data: RetrainData, champion: Champion
) -> SanityReport | None:
    """The window's labels against the champion's label profile (its card; else its canary's
    tags). None when the champion has neither: nothing to compare with (the gate's anchor rule
    then refuses to promote automatically)."""
    from tagger.labels import LabelProfile, confident_agreement, label_profile

    if "labels" in champion.card:
        reference = LabelProfile.from_dict(champion.card["labels"])
    elif champion.canary is not None and len(champion.canary):
        reference = label_profile(champion.canary, champion.model, champion.canary)
    else:
        log.warning("the champion has no label profile nor canary set: feedback not checked")
        return None
    agreement = confident_agreement(champion.model, data.window, reference.confident_score)
    report = check_feedback(data.window, reference, agreement, SanityRules.from_settings(settings))
    out.feedback = [c.as_dict() for c in report.checks]
    log.info("feedback checks: %s", report.summary())
    return report


def _fit_challenger(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    data: RetrainData,
    use_original: bool,
    version: str,
    champion: Champion | None,
) -> TrainResult:
    """Fit the challenger; its card says which window and data it was trained on, and it
    carries its parent's canary set (no champion: none) with the parent's reference."""
    from tagger.train import fit_artefact

    config = TrainConfig(
        data_path=Path("store"),
        output_dir=settings.models_dir,
        # trained_until: the newest question it was trained on (not the default's cut-off)
        cutoff=data.train["created_at"].max(),
        k=settings.retrain_k,
        version=version,
        progress=False,
        set_latest=False,
    )
    holdout = data.holdout
    extra = {
        "data": {
            "file": f"store {settings.store_url}" + (" + original" if use_original else ""),
            "sha256": _frame_sha256(data.train),
        },
        "retrain": {
            "window": {"since": out.since.isoformat(), "until": out.until.isoformat()},
            "with_original": use_original,
            "rows": data.summary(),
            "holdout_period": {
                "start": holdout["created_at"].min().isoformat(),
                "end": holdout["created_at"].max().isoformat(),
            },
        },
    }
    canary = champion.canary if champion is not None else None
    return fit_artefact(
        data.train,
        data.tuning,
        config,
        baseline_df=holdout,  # the drift baseline of a retrained model: its recent slice
        extra_card=extra,
        classes=data.classes,
        canary=canary if canary is not None else holdout.iloc[0:0],
        canary_reference=_canary_reference(champion),
        per_tag_df=holdout,  # its per-tag baseline: the same recent slice the gate judges
    )


def _canary_reference(champion: Champion | None) -> float | None:
    """The Jaccard of the model that pinned the champion's canary set (from its card)."""
    if champion is None:
        return None
    value = champion.card.get("canary", {}).get("reference_jaccard")
    return None if value is None else float(value)


def _anchor(challenger: TagModel, champion: Champion, rules: GateRules) -> AnchorCheck | None:
    """Both models on the champion's canary set (None: it has none, or the rule is off)."""
    import numpy as np

    if rules.canary_min_ratio is None or champion.canary is None or champion.canary.empty:
        return None
    champ = float(np.mean(question_jaccards(champion.model, champion.canary)))
    reference = _canary_reference(champion)
    return AnchorCheck(
        champion=champ,
        challenger=float(np.mean(question_jaccards(challenger, champion.canary))),
        reference=champ if reference is None else reference,
        rows=len(champion.canary),
        min_ratio=rules.canary_min_ratio,
    )


def _compare_tags(
    challenger: TagModel, champion: TagModel, holdout: pd.DataFrame
) -> list[TagComparison]:
    """Both models' per-tag counts on the hold-out, over both vocabularies."""

    def predict(model: TagModel) -> list[list[str]]:
        questions = zip(holdout["title"], holdout["body"], strict=True)
        return [model.analyse(title, body).tags for title, body in questions]

    return compare_tags(
        list(holdout["tags"]),
        predict(champion),
        predict(challenger),
        [*champion.classes, *challenger.classes],
    )


def _judge(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    challenger: TagModel,
    champion: Champion | None,
    holdout: pd.DataFrame,
    rules: GateRules,
) -> GateDecision:
    """Score both models on the held-out slice (paired bootstrap of the gain) and on the
    trusted canary set, apply the gate and the policy, name the drift verdict."""
    out.challenger = evaluate(challenger, holdout, set(challenger.classes))
    gain = anchor = None
    if champion is not None:
        out.champion = evaluate(champion.model, holdout, set(champion.model.classes))
        gain = paired_bootstrap(
            question_jaccards(challenger, holdout),
            question_jaccards(champion.model, holdout),
            confidence=rules.confidence,
            resamples=rules.resamples,
        )
        anchor = _anchor(challenger, champion, rules)
        out.gain = gain.as_dict()
        out.anchor = anchor.as_dict() if anchor is not None else None
        out.tag_comparison = _compare_tags(challenger, champion.model, holdout)
        out.tags = [r.row() for r in judged_tags(out.tag_comparison, rules)[:TAGS_SHOWN]]
    gate: GateDecision = decide(
        out.champion, out.challenger, len(holdout), rules, gain, anchor, out.tag_comparison
    )
    if out.champion is not None and out.champion_validation_jaccard is not None:
        out.recovery = recovery_share(
            out.champion_validation_jaccard, out.champion["jaccard"], out.challenger["jaccard"]
        )
        if anchor is not None and not anchor.passed:
            out.recovery = None  # the slice's scores are not evidence of anything
        out.verdict = drift_verdict(out.recovery, settings.concept_drift_min_recovery, anchor)
    else:
        out.verdict = "no champion to compare with"
    out.outcome, out.reason = _apply_policy(out.policy, gate)
    champion_tags = list(champion.model.classes) if champion is not None else None
    out.vocabulary = describe_change(champion_tags, list(challenger.classes))
    out.reason = f"{out.reason}; {out.vocabulary}"
    return gate


def _apply_policy(policy: str, gate: GateDecision) -> tuple[str, str]:
    """(outcome, reason): the gate decides whether the challenger may be promoted, the policy
    whether it is promoted now, waits for a person, or never is."""
    if not gate.promote:
        return gate.decision, gate.reason
    if policy == "auto":
        return gate.decision, gate.reason
    if policy == "approve":
        return AWAITING, f"passed every check, promotion policy approve: {gate.reason}"
    return "rejected", f"promotion disabled (policy never or --no-promote); {gate.reason}"


def _gate_card(out: RetrainOutcome) -> dict[str, Any]:
    """The gate's decision as the challenger's model card keeps it."""
    return {
        "decision": out.outcome,
        "reason": out.reason,
        "champion_version": out.champion_version,
        "champion": out.champion,
        "challenger": out.challenger,
        "recovery": out.recovery,
        "verdict": out.verdict,
        "policy": out.policy,
        "gain": out.gain,
        "anchor": out.anchor,
        "feedback": out.feedback,
        "tags": out.tags,
    }


def _log_challenger(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    data: RetrainData,
    use_original: bool,
    rules: GateRules,
    gate: GateDecision,
    result: TrainResult,
    artefact_dir: Path,
    version: str,
) -> RegisteredVersion:
    """Log and register the challenger in MLflow with the gate's inputs and decision."""
    from tagger.tracking import log_training

    holdout = data.holdout
    params = _run_params(out, data, use_original, rules)
    tags = {
        "kind": "retrain",
        "decision": out.outcome,
        "reason": out.reason[:5000],
        "drift_verdict": out.verdict,
        "failed_rules": ",".join(gate.failed),
    }
    return log_training(
        settings,
        artefact_dir,
        run_name=f"retrain {version}",
        params=params,
        tags=tags,
        evaluation_df=holdout,
        per_tag=result.per_tag,
    )


def _run_params(
    out: RetrainOutcome, data: RetrainData, use_original: bool, rules: GateRules
) -> dict[str, Any]:
    """The MLflow params that make a retrain comparable: window, rows and gate thresholds."""
    return {
        "window_since": out.since.isoformat(),
        "window_until": out.until.isoformat(),
        "with_original": use_original,
        "rows_labelled": data.n_labelled,
        "rows_original": data.n_original,
        "rows_holdout": len(data.holdout),
        "gate_min_jaccard_gain": rules.min_jaccard_gain,
        "gate_max_coverage_drop": rules.max_coverage_drop,
        "gate_min_holdout_rows": rules.min_holdout_rows,
        "gate_canary_min_ratio": rules.canary_min_ratio,
        "gate_tag_max_f1_drop": rules.tag_max_f1_drop,
        "gate_tag_min_support": rules.tag_min_support,
        "gate_confidence": rules.confidence,
        "gate_bootstrap_resamples": rules.resamples,
        "policy": out.policy,
        "source": out.source[:250],
        "champion_version": out.champion_version,
    }


def _log_gate_metrics(out: RetrainOutcome) -> None:
    from mlflow import MlflowClient

    assert out.run_id is not None and out.challenger is not None
    client = MlflowClient()
    values = {
        "challenger_jaccard": out.challenger["jaccard"],
        "challenger_coverage": out.challenger["coverage"],
        "holdout_rows": out.challenger["rows"],
    }
    if out.champion is not None:
        values["champion_jaccard"] = out.champion["jaccard"]
        values["champion_coverage"] = out.champion["coverage"]
    if out.recovery is not None:
        values["drift_recovery"] = out.recovery
    if out.champion_validation_jaccard is not None:
        values["champion_validation_jaccard"] = out.champion_validation_jaccard
    for prefix, numbers in (("gain", out.gain), ("canary", out.anchor)):
        for key, value in (numbers or {}).items():
            values[f"{prefix}_{key}"] = value
    for key, value in values.items():
        client.log_metric(out.run_id, key, float(value))


def _log_tag_comparison(out: RetrainOutcome) -> None:
    """Every tag of both vocabularies, both models, worst F1 drop first: what the per-tag check
    judged (``per_tag_comparison.csv`` in the retrain's run)."""
    from mlflow import MlflowClient

    if out.run_id is None or not out.tag_comparison:
        return
    csv = comparison_frame(out.tag_comparison).to_csv(index=False)
    MlflowClient().log_text(out.run_id, csv, COMPARISON_FILE)


def _timestamp(value: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date: {value!r}") from exc
    if pd.isna(ts):
        raise argparse.ArgumentTypeError(f"not a date: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=_timestamp, default=None, help="window start (UTC; default: now - window)"
    )
    parser.add_argument("--until", type=_timestamp, default=None, help="window end (default: now)")
    parser.add_argument(
        "--with-original",
        action="store_true",
        default=None,
        help="also train on the original 2008-2011 questions",
    )
    parser.add_argument(
        "--no-promote", action="store_true", help="gate and record, but never promote"
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON too")


def run(args: argparse.Namespace, settings: LifecycleSettings) -> int:
    """Exit 0 promoted, rejected or awaiting approval, 1 failed, 2 bad input, 3 skipped (too
    little data), 4 suspicious feedback (stopped before fitting)."""
    since, until = args.since, args.until
    if since is not None and until is not None and since >= until:
        print(
            f"error: --since {since.isoformat()} is not before --until {until.isoformat()}",
            file=sys.stderr,
        )
        return 2
    if since is not None and until is None:
        until = pd.Timestamp.now(tz="UTC")
    if until is not None and since is None:
        since = until - pd.Timedelta(days=settings.retrain_window_days)
    try:
        store = open_store(settings.store_url)
    except StoreError as exc:
        print(f"error: TAGWATCH_STORE_URL: {exc}", file=sys.stderr)
        return 2
    if settings.retrain_with_original or args.with_original:
        try:
            _original(settings)
        except DataError as exc:
            print(f"error: --with-original: {exc}", file=sys.stderr)
            return 2
    try:
        out = retrain(
            settings, since, until, args.with_original, store=store, promote=not args.no_promote
        )
    finally:
        store.close()
    if args.json:
        import json

        print(json.dumps(out.as_dict(), default=str))
    print(out.line())
    return {"promoted": 0, "rejected": 0, AWAITING: 0, "skipped": 3, SUSPICIOUS: 4}.get(
        out.outcome, 1
    )
