"""DriftExplained: the words of latest.json, posted beside the active drift alerts of a real
Alertmanager, and only there."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from drift.notify import (
    EvidenceCache,
    TagEvidence,
    description,
    explain_once,
    explain_tags_once,
    jobs_to_explain,
    run_report_url,
    summary,
    tag_description,
    tag_explanation_alerts,
    tag_summary,
    tags_to_explain,
)
from store import FeedbackRecord, PredictionRecord, SQLiteStore
from tagger.columns import FEATURE_COLUMNS
from tagger.tagquality import TagCounts
from tests.processes import Process, http_ok, start_process, wait_until

LATEST: dict[str, Any] = {
    "report": "2026-03-02T020000Z.html",
    "bin_start": "2026-03-01T00:00:00+00:00",
    "bin_end": "2026-03-02T00:00:00+00:00",
    "questions_sampled": 1000,
    "questions_with_feedback": 500,
    "text": {
        "status": "red",
        "auc": 0.781,
        "reason": "ROC AUC 0.781 of a classifier",
        "current_words": [
            {"word": w, "current_share": 0.02, "baseline_share": 0.0}
            for w in ("react", "angular", "dataframe", "laravel", "pandas")
        ],
        "baseline_words": [],
        "typical_questions": [
            {"title": "React hook runs twice", "url": "https://stackoverflow.com/q/1", "score": 0.9}
        ],
    },
    "unknown_tags": [{"tag": "reactjs", "count": 41, "share": 0.031}],
    "oov_words": [{"word": "flutter", "count": 12}],
    "features": {
        "text": {"value": 0.781, "status": "red"},
        "oov_ratio": {"value": 0.1, "status": "red"},
    },
}


def test_summary_and_description_name_words_tags_and_questions() -> None:
    line = summary(LATEST)
    assert line.startswith("The questions changed: react, angular, dataframe, laravel, pandas")
    assert "new user tags: reactjs" in line and "(text AUC 0.78, red)" in line
    text = description(LATEST)
    assert "react 2.0% (baseline 0.0%)" in text and "reactjs 41 (3.1%)" in text
    assert "flutter 12" in text and "React hook runs twice https://stackoverflow.com/q/1" in text
    assert "red features: oov_ratio, text" in text


def test_only_active_drift_alerts_are_explained() -> None:
    def alert(name: str, job: str, state: str = "active") -> dict[str, Any]:
        return {"labels": {"alertname": name, "job": job}, "status": {"state": state}}

    active = [
        alert("DataDriftDetected", "drift"),
        alert("PredictorDown", "predictor"),
        alert("InputOOVRatioHigh", "predictor", "suppressed"),
    ]
    assert jobs_to_explain(active) == {"drift"}


def test_run_report_url_sits_beside_latest() -> None:
    assert (
        run_report_url("http://h:8001/reports/latest.html", "x.html")
        == "http://h:8001/reports/x.html"
    )
    assert run_report_url("", "x.html") == "" and run_report_url("http://h/r/latest.html", "") == ""


@pytest.fixture
def alertmanager(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[str]:
    port = free_port()
    config = {"route": {"receiver": "null", "group_by": ["job"]}, "receivers": [{"name": "null"}]}
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    process: Process = start_process(
        "alertmanager",
        [
            "prometheus-alertmanager",
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(process, http_ok(f"{url}/-/ready"), "alertmanager ready", 30)
        yield url
    finally:
        process.stop()


def _alerts(url: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/api/v2/alerts", params={"active": "true"}, timeout=5)
    return list(response.json())


def test_explanations_join_the_groups_of_active_drift_alerts(
    alertmanager: str, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "latest.json").write_text(json.dumps(LATEST))
    now, hold = pd.Timestamp.now(tz="UTC"), pd.Timedelta(minutes=2)
    latest_url = "http://127.0.0.1:8001/reports/latest.html"
    # nothing active: nothing posted, never an email of its own
    assert explain_once(alertmanager, reports, latest_url, now, hold) == 0
    drift = {"labels": {"alertname": "DataDriftDetected", "job": "drift", "severity": "warning",
                        "feature": "text"}}  # fmt: skip
    requests.post(f"{alertmanager}/api/v2/alerts", json=[drift], timeout=5).raise_for_status()
    assert explain_once(alertmanager, reports, latest_url, now, hold) == 1
    explained = [a for a in _alerts(alertmanager) if a["labels"]["alertname"] == "DriftExplained"]
    assert len(explained) == 1 and explained[0]["labels"]["job"] == "drift"
    notes = explained[0]["annotations"]
    assert notes["summary"] == summary(LATEST)
    assert notes["report_url"] == "http://127.0.0.1:8001/reports/2026-03-02T020000Z.html"
    # a waiting page (no judged bin) explains nothing
    (reports / "latest.json").write_text(json.dumps({"bin_start": None, "waiting": "…"}))
    assert explain_once(alertmanager, reports, latest_url, now, hold) == 0


JS_BASELINE = {"precision": 0.612, "recall": 0.331, "f1": 0.442, "support": 310.0}
RENAMED = TagEvidence(
    tag="javascript",
    windows=[
        ("last hour", TagCounts("javascript", fp=41)),
        ("last day", TagCounts("javascript", tp=30, fp=400, fn=20)),
    ],
    baseline=JS_BASELINE,
    examples=[
        {
            "title": "Sort an array of objects",
            "url": "https://stackoverflow.com/q/7",
            "outcome": "fp",
        },
        {"title": "", "url": "", "outcome": "fn"},
    ],
)


def test_tag_explanation_names_precision_recall_support_and_examples() -> None:
    assert tag_summary(RENAMED) == (
        "Tag javascript over the last hour: precision 0.000 (baseline 0.612), recall 0.000 "
        "(baseline 0.331) on 41 questions with feedback"
    )
    text = tag_description(RENAMED)
    assert "Last hour: precision 0.000 (baseline 0.612), recall 0.000 (baseline 0.331), " in text
    assert "F1 0.000 (baseline 0.442) on 41 questions where javascript was given" in text
    assert "Last day: precision 0.070 (baseline 0.612), recall 0.600" in text
    assert "(tp 30, fp 400, fn 20)" in text and "Mostly false positives" in text
    assert "[suggested, not given] Sort an array of objects https://stackoverflow.com/q/7" in text
    assert "[given, missed] (text removed: retention)" in text
    quiet = TagEvidence("go", [("last hour", TagCounts("go")), ("last day", TagCounts("go", fn=5))],
                        None)  # fmt: skip
    assert "over the last day" in tag_summary(quiet) and "recall 0.000 on 5" in tag_summary(quiet)
    assert "no per-tag baseline" in tag_description(quiet)
    assert "No example question" in tag_description(quiet)
    now = pd.Timestamp("2026-03-02T12:00:00Z")
    (alert,) = tag_explanation_alerts([("predictor", RENAMED)], "http://r/latest.html", now,
                                      pd.Timedelta(minutes=2))  # fmt: skip
    assert alert["labels"] == {"alertname": "TagQualityExplained", "severity": "warning",
                               "job": "predictor", "tag": "javascript"}  # fmt: skip
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#tagqualitylow"
    assert alert["endsAt"] == "2026-03-02T12:02:00+00:00"


def test_only_active_tag_quality_alerts_are_explained() -> None:
    def alert(name: str, tag: str, state: str = "active") -> dict[str, Any]:
        return {"labels": {"alertname": name, "job": "predictor", "tag": tag},
                "status": {"state": state}}  # fmt: skip

    active = [
        alert("TagQualityLow", "javascript"),
        alert("TagQualityLow", "php", "suppressed"),  # inhibited by JaccardLow
        alert("DataDriftDetected", "x"),
    ]
    assert tags_to_explain(active) == {("predictor", "javascript")}


def _renamed_store(path: Path, now: float) -> SQLiteStore:
    """An hour of questions about javascript, where users now write ``js``."""
    store = SQLiteStore(path)
    features: dict[str, object] = dict.fromkeys(FEATURE_COLUMNS, 0)
    features["top_tag"] = "javascript"
    for i in range(40):
        pid = f"{i:032x}"
        store.save_prediction(PredictionRecord(
            pid, now - 3000 + 60 * i, f"Closure question {i}", "", ["javascript", "jquery"],
            {"javascript": 0.9}, 0.001, "test", features, url=f"https://stackoverflow.com/q/{i}",
        ))  # fmt: skip
        store.save_feedback(FeedbackRecord(pid, ["js", "jquery"], 0.5, 0.5, 1, now - 100))
    return store


def test_tag_explanations_join_the_active_tag_quality_alerts(
    alertmanager: str, tmp_path: Path
) -> None:
    """A real store and a real Alertmanager: only beside an active TagQualityLow, with the
    store's counts and its latest wrong questions."""
    now = pd.Timestamp.now(tz="UTC")
    store = _renamed_store(tmp_path / "store.sqlite3", now.timestamp())
    reads: list[str] = []

    def reader() -> SQLiteStore:
        reads.append("store")
        return store

    def baseline() -> dict[str, dict[str, float]]:
        return {"javascript": JS_BASELINE}

    hold, url = pd.Timedelta(minutes=2), "http://127.0.0.1:8001/reports/latest.html"
    assert explain_tags_once(alertmanager, reader, baseline, url, now, hold) == 0
    assert reads == []  # nothing active: the store is not even read
    low = {"labels": {"alertname": "TagQualityLow", "job": "predictor", "severity": "warning",
                      "tag": "javascript"}}  # fmt: skip
    requests.post(f"{alertmanager}/api/v2/alerts", json=[low], timeout=5).raise_for_status()
    assert explain_tags_once(alertmanager, reader, baseline, url, now, hold) == 1
    explained = [
        a for a in _alerts(alertmanager) if a["labels"]["alertname"] == "TagQualityExplained"
    ]
    assert len(explained) == 1 and explained[0]["labels"]["tag"] == "javascript"
    notes = explained[0]["annotations"]
    print(f"TagQualityExplained: {notes['summary']} / {notes['description']}")
    assert notes["summary"].startswith("Tag javascript over the last hour: precision 0.000")
    assert "on 40 questions with feedback" in notes["summary"]
    assert "(tp 0, fp 40, fn 0)" in notes["description"]
    assert "Closure question 39 https://stackoverflow.com/q/39 |" in notes["description"]
    assert notes["description"].count("[suggested, not given]") == 3
    # re-posted every 15 s; the store is read again only after EVIDENCE_MAX_AGE
    cache, reads[:] = EvidenceCache(), []
    for seconds in (0, 15, 30, 301):
        later = now + pd.Timedelta(seconds=seconds)
        assert explain_tags_once(alertmanager, reader, baseline, url, later, hold, cache=cache) == 1
    assert reads == ["store", "store"]
    store.close()
