"""DriftExplained: the words, new tags and questions behind a drift alert, in its email.

Prometheus alerts carry numbers: their labels stay bounded (a word never becomes a label), so
no word can reach an email through a rule. The drift process knows the words: the latest run
wrote them to ``latest.json``. Every ``TAGWATCH_EXPLAIN_INTERVAL_SECONDS`` (15 s) it asks
Alertmanager (``TAGWATCH_ALERTMANAGER_API_URL``) which drift alerts are active
(DataDriftDetected, InputOOVRatioHigh, ConceptDriftSuspected) and posts one DriftExplained
alert into each of their groups (Alertmanager groups warnings by ``job``), well within the
group's first wait (1 min): the email that carries the numbers carries the words too, and the
link to the report of the run that found them. An explanation is only ever posted beside an
active drift alert, so it never sends an email alone; it ends two minutes after the last one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

ALERTNAME = "DriftExplained"
EXPLAINED_ALERTS = ("DataDriftDetected", "InputOOVRatioHigh", "ConceptDriftSuspected")


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
    import requests

    latest = _latest(reports_dir)
    if latest is None:
        return 0
    base = api_url.rstrip("/")
    response = requests.get(f"{base}/api/v2/alerts", params={"active": "true"}, timeout=timeout)
    response.raise_for_status()
    jobs = jobs_to_explain(response.json())
    if not jobs:
        return 0
    url = run_report_url(drift_report_url, str(latest.get("report") or ""))
    alerts = explanation_alerts(latest, jobs, url, now, hold)
    requests.post(f"{base}/api/v2/alerts", json=alerts, timeout=timeout).raise_for_status()
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
