"""``python -m lifecycle serve`` as a real process: Alertmanager webhook, debounce, bad input."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import RetrainEnv, cache_artefact, fill_store, lifecycle_env
from tests.processes import (
    Process,
    http_ok,
    metric_value,
    python_module,
    start_process,
    wait_until,
)


def alert(name: str, status: str = "firing") -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "warning", "job": "drift"},
        "annotations": {"summary": "test"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }


def payload(*alerts: dict[str, object]) -> dict[str, object]:
    """Alertmanager's webhook body (version 4)."""
    return {
        "version": "4",
        "groupKey": '{}:{job="drift"}',
        "status": "firing",
        "receiver": "lifecycle",
        "groupLabels": {"job": "drift"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


@pytest.fixture
def service(
    tmp_path: Path,
    models_dir: Path,
    tagwatch_settings: TagwatchSettings,
    free_port: Callable[[], int],
) -> Iterator[tuple[str, RetrainEnv, Process]]:
    """The service on a free port; 60 labelled questions in the store; a retrain that skips
    (minimum 10,000 labelled) so the test sees the webhook's decisions, not a training."""
    port = free_port()
    rt = lifecycle_env(
        tmp_path / "lc",
        tagwatch_settings.data_dir,
        TAGWATCH_PORT=str(port),
        TAGWATCH_HOST="127.0.0.1",
        TAGWATCH_WEBHOOK_MIN_NEW_LABELLED="50",
        TAGWATCH_WEBHOOK_DEBOUNCE_SECONDS="3600",
        TAGWATCH_RETRAIN_MIN_LABELLED="10000",
    )
    model = cache_artefact(models_dir / "test", rt.settings.models_dir)
    proc = start_process("lifecycle", python_module("lifecycle", "serve"), rt.root, rt.env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(proc, http_ok(f"{url}/healthz"), "lifecycle /healthz", 60)
        df = load_questions(tagwatch_settings.titles_path).tail(60)
        fill_store(rt.settings.store_url, model, df.head(30), time.time() - 600, 1.0)
        yield url, rt, proc
    finally:
        proc.stop()


def webhook_counts(url: str) -> dict[str, float | None]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        o: metric_value(text, "tagwatch_lifecycle_webhook_requests_total", f'outcome="{o}"')
        for o in ("triggered", "debounced", "busy", "not_enough_data", "ignored", "invalid")
    }


def test_webhook_triggers_once_then_debounces(
    service: tuple[str, RetrainEnv, Process], tagwatch_settings: TagwatchSettings
) -> None:
    url, rt, proc = service
    post = lambda body: requests.post(f"{url}/webhook", json=body, timeout=10)  # noqa: E731

    # an alert it does not act on, and a resolved one: acknowledged, nothing started
    r = post(payload(alert("PredictorDown"), alert("JaccardLow", "resolved")))
    assert r.status_code == 200 and r.json()["action"] == "ignored"
    # too few questions labelled since the last retrain (30 < 50)
    r = post(payload(alert("DataDriftDetected")))
    assert r.status_code == 200 and r.json()["action"] == "not_enough_data", r.text
    assert "30 questions labelled since the last retrain, fewer than 50" in r.json()["reason"]

    model = rt.settings.models_dir / "test"
    df = load_questions(tagwatch_settings.titles_path).tail(30)
    fill_store(rt.settings.store_url, model, df, time.time() - 300, 1.0)
    r = post(payload(alert("DataDriftDetected"), alert("JaccardLow")))
    assert r.status_code == 202, r.text
    assert r.json() == {
        "action": "triggered",
        "alerts": ["DataDriftDetected", "JaccardLow"],
        "new_labelled": 60,
    }
    # Alertmanager repeats the notification: debounced, at most one retrain
    for _ in range(3):
        r = post(payload(alert("JaccardLow")))
        assert r.status_code == 200 and r.json()["action"] == "debounced", r.text
        assert "next allowed in" in r.json()["reason"]

    def finished() -> bool:
        return requests.get(f"{url}/healthz", timeout=5).json()["last"]["outcome"] == "skipped"

    wait_until(proc, finished, "the triggered retrain to finish", 60)
    health = requests.get(f"{url}/healthz", timeout=5).json()
    assert health["last"]["source"] == "webhook DataDriftDetected,JaccardLow"
    assert "fewer than 10000" in health["last"]["line"]
    text = requests.get(f"{url}/metrics", timeout=5).text
    assert metric_value(text, "tagwatch_retrain_runs_total", 'outcome="skipped"') == 1
    assert metric_value(text, "tagwatch_retrain_runs_total", 'outcome="promoted"') == 0
    assert webhook_counts(url) == {
        "triggered": 1,
        "debounced": 3,
        "busy": 0,
        "not_enough_data": 1,
        "ignored": 1,
        "invalid": 0,
    }


def test_manual_retrain_runs_once_at_a_time(service: tuple[str, RetrainEnv, Process]) -> None:
    url, _, proc = service
    r = requests.post(f"{url}/retrain", timeout=10)
    assert r.status_code == 202 and r.json()["action"] == "started", r.text
    busy = requests.post(f"{url}/retrain", timeout=10)
    # the skipped retrain is quick: either still running (409) or already done (202 again)
    assert (busy.status_code, busy.json()["action"]) in {(409, "busy"), (202, "started")}

    def finished() -> bool:
        health = requests.get(f"{url}/healthz", timeout=5).json()
        return health["last"]["outcome"] == "skipped" and not health["retrain_running"]

    wait_until(proc, finished, "the manual retrain to finish", 60)
    health = requests.get(f"{url}/healthz", timeout=5).json()
    assert health["last"]["source"] == "manual"
    text = requests.get(f"{url}/metrics", timeout=5).text
    runs = metric_value(text, "tagwatch_retrain_runs_total", 'outcome="skipped"')
    assert runs == (2 if busy.status_code == 202 else 1)
    assert requests.get(f"{url}/retrain", timeout=5).status_code == 405


def test_bad_webhook_input_is_a_4xx_json_error_and_changes_nothing(
    service: tuple[str, RetrainEnv, Process],
) -> None:
    url, _, _ = service
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": "not json", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type"),
        (
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": [1, 2]}, 400, "JSON object"),
        ({"json": {"version": "4"}}, 400, "alerts: must be a list"),
        ({"json": {"alerts": ["x"]}}, 400, "alerts[0]: must be an object"),
        ({"json": {"alerts": [{"labels": {}}]}}, 400, "alerts[0].labels.alertname"),
        (
            {"json": {"alerts": [{"labels": {"alertname": "JaccardLow"}, "status": "on"}]}},
            400,
            "alerts[0].status",
        ),
        ({"data": "x" * (1 << 21), "headers": {"Content-Type": "application/json"}}, 413, "larger"),
    ]
    for kwargs, status, message in cases:
        r = requests.post(f"{url}/webhook", timeout=10, **kwargs)
        assert r.status_code == status, (kwargs.get("json"), r.status_code, r.text[:300])
        body = r.json()
        assert body["status"] == status and message in body["error"], body
    assert requests.get(f"{url}/webhook", timeout=5).status_code == 405
    counts = webhook_counts(url)
    assert counts["invalid"] == len(cases) and counts["triggered"] == 0
    health = requests.get(f"{url}/healthz", timeout=5).json()
    assert health["last_started"] is None and health["last"]["outcome"] is None
