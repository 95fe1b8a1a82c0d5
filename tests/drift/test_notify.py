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
    description,
    explain_once,
    jobs_to_explain,
    run_report_url,
    summary,
)
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
