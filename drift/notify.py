"""DriftExplained and TagQualityExplained: the words, tags and questions behind an alert, in
its email.

Prometheus alerts carry numbers: their labels stay bounded (a word never becomes a label), so
no word can reach an email through a rule. The drift process knows the words: the latest run
wrote them to ``latest.json``. Every ``TAGWATCH_EXPLAIN_INTERVAL_SECONDS`` (15 s) it asks
Alertmanager (``TAGWATCH_ALERTMANAGER_API_URL``) which drift alerts are active
(DataDriftDetected, InputOOVRatioHigh, ConceptDriftSuspected) and posts one DriftExplained
alert into each of their groups (Alertmanager groups warnings by ``job``), well within the
group's first wait (1 min): the email that carries the numbers carries the words too, and the
link to the report of the run that found them. An explanation is only ever posted beside an
active drift alert, so it never sends an email alone; it ends two minutes after the last one.

Likewise, beside each active TagQualityLow{job, tag} it posts TagQualityExplained{job, tag}:
the tag's precision, recall and F1 over the last hour and day counted in the store (SQL), its
support, against the served model's per-tag baseline, and three recent questions where the
tag was wrongly suggested or missed (title and link), which no Prometheus rule can name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from store import PredictionStore
    from tagger.tagquality import TagCounts

log = logging.getLogger(__name__)

ALERTNAME = "DriftExplained"
EXPLAINED_ALERTS = ("DataDriftDetected", "InputOOVRatioHigh", "ConceptDriftSuspected")
TAG_ALERTNAME = "TagQualityExplained"
TAG_EXPLAINED_ALERT = "TagQualityLow"
# the windows of TagQualityLow's recording rules (prometheus/rules/recording.yml)
TAG_WINDOWS = (("last hour", pd.Timedelta(hours=1)), ("last day", pd.Timedelta(days=1)))


def _names(items: Iterable[dict[str, Any]], key: str, n: int) -> list[str]:
    return [str(i.get(key, "")) for i in list(items)[:n]]


def summary(latest: dict[str, Any]) -> str:
    """One line: the words and the new tags first, then the text AUC."""
    text = latest.get("text") or {}
    parts = []
    if words := _names(text.get("current_words") or [], "word", 8):
        parts.append("the questions changed: " + ", ".join(words))
    if tags := _names(latest.get("unknown_tags") or [], "tag", 6):
        parts.append("new user tags: " + ", ".join(tags))
    if not parts and (oov := _names(latest.get("oov_words") or [], "word", 8)):
        parts.append("new words: " + ", ".join(oov))
    head = "; ".join(parts) or "nothing named in the latest bin"
    auc = f" (text AUC {text['auc']:.2f}, {text['status']})" if text.get("auc") else ""
    return head[0].upper() + head[1:] + auc


def description(latest: dict[str, Any]) -> str:
    """The numbers behind the summary: shares of questions, counts of tags, example questions."""
    text = latest.get("text") or {}
    red = sorted(f for f, v in (latest.get("features") or {}).items() if v["status"] == "red")
    lines = [
        f"Latest bin {latest.get('bin_start')} to {latest.get('bin_end')}, "
        f"{latest.get('questions_sampled', 0)} questions read; red features: "
        f"{', '.join(red) or 'none'}.",
        f"Text: {text['reason']}." if text.get("reason") else "",
    ]
    if words := text.get("current_words"):
        listed = ", ".join(
            f"{w['word']} {w['current_share']:.1%} (baseline {w['baseline_share']:.1%})"
            for w in words[:10]
        )
        lines.append(f"Words most typical of the bin (share of its questions): {listed}.")
    if tags := latest.get("unknown_tags"):
        listed = ", ".join(f"{u['tag']} {u['count']} ({u['share']:.1%})" for u in tags[:10])
        lines.append(
            f"User tags the model does not know ({latest.get('questions_with_feedback', 0)} "
            f"questions with feedback; count, share of user tags): {listed}."
        )
    if oov := latest.get("oov_words"):
        listed = ", ".join(f"{o['word']} {o['count']}" for o in oov[:10])
        lines.append(f"Words the model never learnt (questions): {listed}.")
    if questions := text.get("typical_questions"):
        listed = " | ".join(f"{q['title']} {q['url']}".strip() for q in questions[:3])
        lines.append(f"Typical questions: {listed}")
    return " ".join(line for line in lines if line)


def run_report_url(latest_url: str, report_name: str) -> str:
    """The public URL of a run's report, beside ``latest.html`` (TAGWATCH_DRIFT_REPORT_URL)."""
    if not latest_url or not report_name:
        return ""
    base = latest_url.rsplit("/", 1)[0] if latest_url.endswith(".html") else latest_url
    return f"{base.rstrip('/')}/{report_name}"


def explanation_alerts(
    latest: dict[str, Any],
    jobs: Iterable[str],
    report_url: str,
    now: pd.Timestamp,
    hold: pd.Timedelta,
) -> list[dict[str, Any]]:
    """One DriftExplained per job group (Alertmanager API v2), ending at ``now + hold``."""
    annotations = {
        "summary": summary(latest),
        "description": description(latest),
        "action": "Open the report of the run that found it"
        + (f" ({report_url})" if report_url else "")
        + ": its What changed section lists the words, the tags and the questions; retrain "
        "so that the vocabulary includes the new tags.",
        "runbook_url": "docs/runbook.md#driftexplained",
        "dashboard": "tagwatch-drift",
        "report_url": report_url,
    }
    return [
        {
            "labels": {"alertname": ALERTNAME, "severity": "warning", "job": job},
            "annotations": annotations,
            "startsAt": now.isoformat(),
            "endsAt": (now + hold).isoformat(),
            "generatorURL": report_url,
        }
        for job in sorted(set(jobs))
    ]


def jobs_to_explain(active: Iterable[dict[str, Any]]) -> set[str]:
    """The ``job`` of every active (not silenced, not inhibited) drift alert."""
    out = set()
    for alert in active:
        labels = alert.get("labels") or {}
        status = (alert.get("status") or {}).get("state", "active")
        if labels.get("alertname") in EXPLAINED_ALERTS and status == "active":
            out.add(str(labels.get("job", "")))
    return out


def explain_once(
    api_url: str,
    reports_dir: Path,
    drift_report_url: str,
    now: pd.Timestamp,
    hold: pd.Timedelta,
    timeout: float = 5.0,
) -> int:
    """Post DriftExplained beside the active drift alerts; how many were posted."""
    latest = _latest(reports_dir)
    if latest is None:
        return 0
    jobs = jobs_to_explain(active_alerts(api_url, timeout))
    if not jobs:
        return 0
    url = run_report_url(drift_report_url, str(latest.get("report") or ""))
    return post_alerts(api_url, explanation_alerts(latest, jobs, url, now, hold), timeout)


def active_alerts(api_url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Alertmanager's active alerts (API v2), each with its ``status.state``."""
    import requests

    base = api_url.rstrip("/")
    response = requests.get(f"{base}/api/v2/alerts", params={"active": "true"}, timeout=timeout)
    response.raise_for_status()
    return list(response.json())


def post_alerts(api_url: str, alerts: list[dict[str, Any]], timeout: float = 5.0) -> int:
    import requests

    url = f"{api_url.rstrip('/')}/api/v2/alerts"
    requests.post(url, json=alerts, timeout=timeout).raise_for_status()
    return len(alerts)


def _latest(reports_dir: Path) -> dict[str, Any] | None:
    """The latest run's findings, when it judged a bin (a waiting page explains nothing)."""
    try:
        data = json.loads((Path(reports_dir) / "latest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("bin_start"):
        return None
    return data


# -- TagQualityExplained ----------------------------------------------------------------------


def tags_to_explain(active: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(job, tag) of every active (not silenced, not inhibited) TagQualityLow."""
    out = set()
    for alert in active:
        labels = alert.get("labels") or {}
        status = (alert.get("status") or {}).get("state", "active")
        if labels.get("alertname") == TAG_EXPLAINED_ALERT and status == "active":
            out.add((str(labels.get("job", "")), str(labels.get("tag", ""))))
    return out


@dataclass(frozen=True)
class TagEvidence:
    """What the store says about one tag now, beside its baseline (per_tag_metrics.csv)."""

    tag: str
    windows: list[tuple[str, TagCounts]]  # ("last hour", counts), ("last day", counts)
    baseline: dict[str, float] | None  # precision, recall, f1, support on validation
    examples: list[dict[str, Any]] = field(default_factory=list)  # PredictionStore.tag_examples


def _vs(ev: TagEvidence, name: str, value: float) -> str:
    base = (ev.baseline or {}).get(name)
    label = "F1" if name == "f1" else name
    return f"{label} {value:.3f}" + ("" if base is None else f" (baseline {base:.3f})")


def _window(ev: TagEvidence) -> tuple[str, TagCounts]:
    """The shortest window with some support (the last hour, unless it had none)."""
    return next(((w, c) for w, c in ev.windows if c.support), ev.windows[-1])


def tag_summary(ev: TagEvidence) -> str:
    """One line: the tag's precision and recall now against its baseline, and its support."""
    window, c = _window(ev)
    return (
        f"Tag {ev.tag} over the {window}: {_vs(ev, 'precision', c.precision)}, "
        f"{_vs(ev, 'recall', c.recall)} on {c.support} questions with feedback"
    )


def _kind(c: TagCounts) -> str:
    if c.fp > 2 * c.fn:
        return (
            "Mostly false positives: the model suggests the tag where users do not give it "
            "(renamed by a client, or its questions moved to another tag?)."
        )
    if c.fn > 2 * c.fp:
        return (
            "Mostly false negatives: users give the tag where the model does not suggest it "
            "(a new kind of question for this tag?)."
        )
    return "False positives and false negatives alike."


def tag_description(ev: TagEvidence) -> str:
    """Both windows' numbers from the store, what kind of error dominates, three examples."""
    lines = []
    for window, c in ev.windows:
        lines.append(
            f"{window.capitalize()}: {_vs(ev, 'precision', c.precision)}, "
            f"{_vs(ev, 'recall', c.recall)}, {_vs(ev, 'f1', c.f1)} on {c.support} questions "
            f"where {ev.tag} was given or predicted (tp {c.tp}, fp {c.fp}, fn {c.fn})."
        )
    if ev.baseline is None:
        lines.append("The served model has no per-tag baseline (per_tag_metrics.csv).")
    lines.append(_kind(_window(ev)[1]))
    listed = " | ".join(
        f"[{'suggested, not given' if e['outcome'] == 'fp' else 'given, missed'}] "
        f"{e['title'] or '(text removed: retention)'} {e['url']}".strip()
        for e in ev.examples
    )
    lines.append(f"Examples: {listed}" if listed else "No example question in the last day.")
    return " ".join(lines)


def tag_explanation_alerts(
    evidence: Iterable[tuple[str, TagEvidence]],
    report_url: str,
    now: pd.Timestamp,
    hold: pd.Timedelta,
) -> list[dict[str, Any]]:
    """One TagQualityExplained{job, tag} per active TagQualityLow, ending at ``now + hold``."""
    return [
        {
            "labels": {
                "alertname": TAG_ALERTNAME,
                "severity": "warning",
                "job": job,
                "tag": ev.tag,
            },
            "annotations": {
                "summary": tag_summary(ev),
                "description": tag_description(ev),
                "action": f"Open the examples: if users now write another tag for {ev.tag}, "
                "fix the client or retrain with the new tag; the latest drift report's Tags "
                "section ranks every tag against its baseline.",
                "runbook_url": "docs/runbook.md#tagqualitylow",
                "dashboard": "tagwatch-quality",
            },
            "startsAt": now.isoformat(),
            "endsAt": (now + hold).isoformat(),
            "generatorURL": report_url,
        }
        for job, ev in sorted(evidence, key=lambda je: (je[0], je[1].tag))
    ]


def served_per_tag(models_dir: Path, model_version: str) -> dict[str, dict[str, float]]:
    """``tag -> {precision, recall, f1, support}`` of the served artefact's per-tag table."""
    from tagger.artefact import load_per_tag, resolve_version

    table = load_per_tag(resolve_version(models_dir, model_version))
    if table is None:
        return {}
    cols = ("precision", "recall", "f1", "support")
    return {str(r["tag"]): {c: float(r[c]) for c in cols} for _, r in table.iterrows()}


def read_evidence(
    store: PredictionStore,
    tags: Sequence[str],
    baseline: dict[str, dict[str, float]],
    now: pd.Timestamp,
) -> dict[str, TagEvidence]:
    """Each tag's counts over both windows (one query per window for all tags) and examples."""
    until = now.timestamp()
    counts = {w: store.tag_counts(until - d.total_seconds(), until, tags) for w, d in TAG_WINDOWS}
    day = max(d for _, d in TAG_WINDOWS).total_seconds()
    return {
        tag: TagEvidence(
            tag=tag,
            windows=[(w, counts[w][tag]) for w, _ in TAG_WINDOWS],
            baseline=baseline.get(tag),
            examples=store.tag_examples(tag, until - day, until, 3),
        )
        for tag in tags
    }


EVIDENCE_MAX_AGE = pd.Timedelta(minutes=5)


@dataclass
class EvidenceCache:
    """The last evidence read, for the same tags, younger than :data:`EVIDENCE_MAX_AGE`."""

    tags: list[str] = field(default_factory=list)
    at: pd.Timestamp | None = None
    evidence: dict[str, TagEvidence] = field(default_factory=dict)

    def get(self, tags: list[str], now: pd.Timestamp) -> dict[str, TagEvidence] | None:
        fresh = self.at is not None and now - self.at < EVIDENCE_MAX_AGE
        return self.evidence if fresh and tags == self.tags else None

    def put(self, tags: list[str], now: pd.Timestamp, evidence: dict[str, TagEvidence]) -> None:
        self.tags, self.at, self.evidence = list(tags), now, evidence


def explain_tags_once(
    api_url: str,
    store: Callable[[], PredictionStore],
    baseline: Callable[[], dict[str, dict[str, float]]],
    drift_report_url: str,
    now: pd.Timestamp,
    hold: pd.Timedelta,
    timeout: float = 5.0,
    cache: EvidenceCache | None = None,
) -> int:
    """Post TagQualityExplained beside the active TagQualityLow alerts; how many were posted.
    The store and the baseline are read only when some TagQualityLow is active, and with a
    ``cache`` at most every :data:`EVIDENCE_MAX_AGE` for the same tags (a day of feedback
    takes the store ~0.5 s to count; the alerts are re-posted every 15 s)."""
    pairs = tags_to_explain(active_alerts(api_url, timeout))
    if not pairs:
        return 0
    tags = sorted({tag for _, tag in pairs})
    evidence = cache.get(tags, now) if cache is not None else None
    if evidence is None:
        evidence = read_evidence(store(), tags, baseline(), now)
        if cache is not None:
            cache.put(tags, now, evidence)
    alerts = tag_explanation_alerts(
        ((job, evidence[tag]) for job, tag in pairs), drift_report_url, now, hold
    )
    return post_alerts(api_url, alerts, timeout)
