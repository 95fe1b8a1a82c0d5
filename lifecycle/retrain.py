"""``python -m lifecycle retrain``: train a challenger on recent feedback, gate it, maybe promote.

Reads the questions that users labelled (``/feedback`` tags) within a window from the store,
holds out the most recent slice, fits a challenger on the rest (the K most frequent tags of the
window), scores champion and challenger on exactly that slice, and promotes the challenger only
when the gate's rules hold. Every decision and its numbers go to the challenger's MLflow run
(tags ``decision``, ``reason``) and to the lifecycle metrics; the output ends with one summary
line.
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
from lifecycle.gate import GateDecision, GateRules, decide, drift_verdict, recovery_share
from lifecycle.metrics import LifecycleMetrics
from lifecycle.settings import LifecycleSettings
from store import PredictionStore, StoreError, open_store
from tagger.data import DataError, load_questions
from tagger.train import DEFAULT_CUTOFF, TrainConfig, evaluate

if TYPE_CHECKING:
    from lifecycle.registry import Registry
    from tagger.model import TagModel
    from tagger.tracking import RegisteredVersion
    from tagger.train import TrainResult

log = logging.getLogger("lifecycle.retrain")

ACTOR = "lifecycle-gate"
FAILED, SKIPPED = "failed", "skipped"


@dataclass
class RetrainOutcome:
    """What one retrain did; ``line()`` is the summary shown in logs, the demo and emails."""

    outcome: str  # promoted | rejected | failed | skipped
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
    run_id: str | None = None
    duration_seconds: float = 0.0

    def line(self) -> str:
        if self.challenger is None:
            return f"retrain {self.outcome}: {self.reason}"
        rows = int(self.challenger.get("rows", 0))
        if self.outcome == "promoted":
            head = f"retrain promoted v{self.challenger_version}"
            head += f" over v{self.champion_version}" if self.champion_version else ""
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
        return f"{head}: {scores}{why}; {self.verdict}"

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
            "run_id": self.run_id,
            "duration_seconds": round(self.duration_seconds, 1),
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
    if out.outcome in ("promoted", "rejected"):
        metrics.last_success.set(time.time())
    if out.challenger is not None:
        metrics.challenger_jaccard.set(out.challenger["jaccard"])
        metrics.challenger_coverage.set(out.challenger["coverage"])
        metrics.holdout_rows.set(out.challenger.get("rows", 0))
        metrics.recovery.set(float("nan") if out.recovery is None else out.recovery)
    if out.champion is not None:
        metrics.champion_jaccard.set(out.champion["jaccard"])
        metrics.champion_coverage.set(out.champion["coverage"])


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
) -> RetrainOutcome:
    """One retrain. Never raises: failures are logged, counted and returned as "failed"."""
    t0 = time.perf_counter()
    metrics = metrics or LifecycleMetrics(CollectorRegistry())
    d_since, d_until = default_window(settings)
    out = RetrainOutcome(FAILED, "", since if since is not None else d_since, until or d_until)
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
    out.duration_seconds = time.perf_counter() - t0
    _record(metrics, out)
    log.info("%s (%.1f s)", out.line(), out.duration_seconds)
    return out


def _retrain(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    with_original: bool | None,
    store: PredictionStore | None,
    promote: bool,
) -> None:
    """The retrain's steps in order, filling ``out`` as they go: a failure keeps what is known."""
    from lifecycle.registry import Registry
    from tagger.train import write_result

    labelled = _read_labelled(settings, out, store)
    out.data = {"labelled": len(labelled)}
    if len(labelled) < settings.retrain_min_labelled:
        reason = (
            f"{len(labelled)} labelled questions between {out.since:%Y-%m-%d %H:%M} and "
            f"{out.until:%Y-%m-%d %H:%M} UTC, fewer than {settings.retrain_min_labelled}"
        )
        _skip(settings, out, reason)
        return
    use_original = settings.retrain_with_original if with_original is None else with_original
    try:
        data = _dataset(settings, labelled, use_original)
    except DatasetError as exc:
        _skip(settings, out, str(exc))
        return
    out.data = data.summary()

    registry = Registry(settings)
    champion_model = _load_champion(settings, registry, out)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    result = _fit_challenger(settings, out, data, use_original, version)
    rules = GateRules.from_settings(settings)
    gate = _judge(settings, out, result.model, champion_model, data.holdout, rules, promote)
    result.card["gate"] = _gate_card(out)
    artefact_dir = write_result(result, settings.models_dir, set_latest=False)
    registered = _log_challenger(
        settings, out, data, use_original, rules, gate, result, artefact_dir, version
    )
    out.run_id = registered.run_id
    out.challenger_version = registered.version
    out.challenger_artefact = registered.artefact_version
    _log_gate_metrics(out)
    if out.outcome == "promoted":
        registry.promote(registered.version, f"retrain gate: {gate.reason}", ACTOR)


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
    """Train, tuning and held-out slices of the window (plus the original questions if asked)."""
    return build_dataset(
        labelled,
        k=settings.retrain_k,
        holdout_share=settings.holdout_share,
        holdout_days=settings.holdout_days,
        tuning_share=settings.tuning_share,
        original=_original(settings) if use_original else None,
    )


def _load_champion(
    settings: LifecycleSettings, registry: Registry, out: RetrainOutcome
) -> TagModel | None:
    """The champion's model, to score it on the same held-out slice (None: no champion)."""
    from tagger.artefact import load_artefact

    champion_ref = registry.champion()
    if champion_ref is None:
        return None
    path = registry.fetch(champion_ref, settings.models_dir)
    artefact = load_artefact(path.parent, path.name)
    out.champion_version = champion_ref.version
    out.champion_validation_jaccard = float(artefact.card["validation"]["jaccard"])
    return artefact.model


def _fit_challenger(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    data: RetrainData,
    use_original: bool,
    version: str,
) -> TrainResult:
    """Fit the challenger; its card says which window and data it was trained on."""
    from tagger.train import fit_artefact

    config = TrainConfig(
        data_path=Path("store"),
        output_dir=settings.models_dir,
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
    return fit_artefact(
        data.train,
        data.tuning,
        config,
        baseline_df=holdout,  # the drift baseline of a retrained model: its recent slice
        extra_card=extra,
        classes=data.classes,
    )


def _judge(
    settings: LifecycleSettings,
    out: RetrainOutcome,
    challenger: TagModel,
    champion: TagModel | None,
    holdout: pd.DataFrame,
    rules: GateRules,
    promote: bool,
) -> GateDecision:
    """Score both models on the held-out slice, apply the gate, name the drift verdict."""
    out.challenger = evaluate(challenger, holdout, set(challenger.classes))
    if champion is not None:
        out.champion = evaluate(champion, holdout, set(champion.classes))
    gate: GateDecision = decide(out.champion, out.challenger, len(holdout), rules)
    if out.champion is not None and out.champion_validation_jaccard is not None:
        out.recovery = recovery_share(
            out.champion_validation_jaccard, out.champion["jaccard"], out.challenger["jaccard"]
        )
        out.verdict = drift_verdict(out.recovery, settings.concept_drift_min_recovery)
    else:
        out.verdict = "no champion to compare with"
    out.outcome = gate.decision if promote else "rejected"
    out.reason = gate.reason if promote else f"promotion disabled (--no-promote); {gate.reason}"
    return gate


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
    from tagger.train import per_tag_table

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
        per_tag=per_tag_table(result.model, holdout),
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
    for key, value in values.items():
        client.log_metric(out.run_id, key, float(value))


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
    """Exit 0 promoted or rejected, 1 failed, 2 bad input, 3 skipped (too little data)."""
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
    return {"promoted": 0, "rejected": 0, "skipped": 3}.get(out.outcome, 1)
