"""``python -m drift`` as real processes: scheduler, HTTP server, promtool, run-once exit codes."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import requests

from drift.settings import DriftSettings
from store import SQLiteStore
from tests.drift.conftest import DriftCase, drift_env
from tests.processes import metric_value

pytestmark = pytest.mark.slow


def _wait_for(url: str, ok: Callable[[requests.Response], bool], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2)
            last = r.text
            if ok(r):
                return r.text
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready in {timeout} s; last answer: {last[:500]}")


def _sample(text: str, name: str) -> float:
    value = metric_value(text, name)
    assert value is not None, f"{name} not in metrics"
    return value


@pytest.fixture
def filled(case: DriftCase) -> DriftSettings:
    """Yesterday and the day before hold 1,000 questions each (2020): real time, real clock."""
    today = pd.Timestamp.now(tz="UTC").normalize()
    case.replay(case.later(2020).iloc[:2000], per_bin=1000, start=today - pd.Timedelta(days=2))
    return case.settings


def test_scheduler_serves_metrics_reports_and_passes_promtool(
    filled: DriftSettings, free_port: Callable[[], int], tmp_path: Path
) -> None:
    port = free_port()
    env = drift_env(filled, TAGWATCH_PORT=str(port), TAGWATCH_RUN_ON_START="true")
    env["TAGWATCH_CRON"] = "0 2 * * *"
    proc = subprocess.Popen([sys.executable, "-m", "drift"], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        metrics = _wait_for(
            f"{base}/metrics",
            lambda r: (
                "tagwatch_drift_last_success_timestamp_seconds" in r.text
                and _sample(r.text, "tagwatch_drift_last_success_timestamp_seconds") > 0
            ),
        )
        assert _sample(metrics, "tagwatch_drift_runs_total") == 1
        assert _sample(metrics, "tagwatch_drift_failures_total") == 0
        assert _sample(metrics, "tagwatch_drift_bins_judged") == 2
        assert 'tagwatch_drift_feature_status{feature="oov_ratio"} 2.0' in metrics
        assert 'tagwatch_drift_feature_status{feature="top_tag"} 2.0' in metrics

        promtool = shutil.which("promtool")
        assert promtool, "promtool (Debian package prometheus) is required"
        check = subprocess.run(
            [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True
        )
        assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check

        health = requests.get(f"{base}/healthz", timeout=5).json()
        assert health["status"] == "ok" and health["last_run"]["ok"] is True
        latest = requests.get(f"{base}/reports/latest.html", timeout=5)
        assert latest.status_code == 200 and latest.headers["Content-Type"].startswith("text/html")
        assert "oov_ratio" in latest.text
        # the run's own report (an email links it), as HTML and JSON, beside latest
        summary = requests.get(f"{base}/reports/latest.json", timeout=5)
        assert summary.headers["Content-Type"] == "application/json"
        run = summary.json()["report"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{6}Z\.html", run), run
        dated = requests.get(f"{base}/reports/{run}", timeout=5)
        assert dated.status_code == 200 and dated.text == latest.text
        same = requests.get(f"{base}/reports/{run.replace('.html', '.json')}", timeout=5)
        assert same.json() == summary.json()
        # the report links popmon's assets served next to it, never a CDN (works offline)
        links = re.findall(r'(?:src|href)="?([^" >]+\.(?:js|css))', latest.text)
        assert links and all(link.startswith("assets/") for link in links), links
        for link in links:
            asset = requests.get(f"{base}/reports/{link}", timeout=5)
            assert asset.status_code == 200 and len(asset.content) > 500, link
        assert "cdn." not in latest.text
        assert (
            requests.get(f"{base}/reports/assets/js/../../state.json", timeout=5).status_code == 404
        )
        assert requests.get(f"{base}/reports/2001-01-01.html", timeout=5).status_code == 404
        assert requests.get(f"{base}/reports/../state.html", timeout=5).status_code == 404
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"drift scheduler stopped" in err


def test_failing_scheduled_runs_are_counted_and_the_scheduler_keeps_going(
    drift_settings: DriftSettings, store: SQLiteStore, free_port: Callable[[], int], tmp_path: Path
) -> None:
    """The store exists (the predictor made it) but the model does not: every run fails."""
    port = free_port()
    settings = drift_settings.model_copy(update={"models_dir": tmp_path / "empty"})
    env = drift_env(settings, TAGWATCH_PORT=str(port), TAGWATCH_CRON="* * * * * *")  # every second
    proc = subprocess.Popen([sys.executable, "-m", "drift"], env=env, stderr=subprocess.PIPE)
    try:
        metrics = _wait_for(
            f"http://127.0.0.1:{port}/metrics",
            lambda r: (
                "tagwatch_drift_failures_total" in r.text
                and _sample(r.text, "tagwatch_drift_failures_total") >= 2
            ),
        )
        assert _sample(metrics, "tagwatch_drift_last_success_timestamp_seconds") == 0
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert b"drift run failed" in err and b"no model trained yet" in err


def test_run_once_exit_codes(filled: DriftSettings, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "drift", "run-once"], env=drift_env(filled), capture_output=True
    )
    assert ok.returncode == 0, ok.stderr.decode()
    assert (filled.reports_dir / "latest.html").is_file()
    assert b"judged 2 bins" in ok.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "drift", "run-once"],
        env=drift_env(filled, TAGWATCH_MODELS_DIR=str(tmp_path / "none")),
        capture_output=True,
    )
    assert bad.returncode == 1 and b"no model trained yet" in bad.stderr

    invalid = subprocess.run(
        [sys.executable, "-m", "drift", "run-once"],
        env=drift_env(filled, TAGWATCH_BIN_SIZE="soon"),
        capture_output=True,
    )
    assert invalid.returncode == 2 and b"TAGWATCH_BIN_SIZE" in invalid.stderr
