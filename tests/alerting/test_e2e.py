"""End to end with the real binaries: predictor (gunicorn) and drift job -> Prometheus (the
repository's rules) -> Alertmanager (the rendered config and templates) -> SMTP sink, and the
weekly job.

Faults are real and need no change to the predictor: SIGSTOP on its process group makes it hang
(scrapes time out -> PredictorDown, critical), SIGCONT resolves it. Drift is real too: the store
holds 2,000 real 2020 questions over the two previous days, and ``python -m drift`` judges them
red against the 2011 baseline (-> DataDriftDetected, warning).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from alerting.settings import AlertingSettings
from store import PredictionRecord, SQLiteStore
from tagger.artefact import load_artefact
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.processes import (
    FEEDBACK_AUTH,
    NEW_WORDS,
    Process,
    http_ok,
    start_process,
    wait_until,
    write_secrets,
)

from .conftest import (
    ALERTMANAGER_DIR,
    REPO_ROOT,
    Mail,
    SmtpSink,
    derive_alertmanager_config,
    derive_prometheus_config,
    require_binaries,
)

pytestmark = pytest.mark.slow

GRAFANA = "http://grafana.test:3000"
RUNBOOK = "https://runbooks.test/tagwatch/blob/main"
DRIFT_QUESTIONS_PER_DAY = 1000


@dataclass
class Stack:
    tmp: Path
    sink: SmtpSink
    predictor: Process
    prometheus_url: str
    alertmanager_url: str
    predictor_addr: str
    drift: Process
    drift_url: str
    drift_report_url: str
    store_url: str
    models_dir: Path
    questions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def prom(self, path: str, **params: Any) -> Any:
        resp = requests.get(f"{self.prometheus_url}{path}", params=params, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]

    def wait_prom(self, expr: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.prom("/api/v1/query", query=expr)["result"]
            if result:
                return list(result)
            time.sleep(0.3)
        targets = [
            (t["labels"]["job"], t["health"], t["lastError"])
            for t in self.prom("/api/v1/targets")["activeTargets"]
        ]
        raise AssertionError(f"Prometheus: {expr} stayed empty for {timeout} s; {targets}")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
    tagwatch_settings: TagwatchSettings,
) -> Iterator[Stack]:
    require_binaries("prometheus", "prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    ports = _free_ports(5)
    p_pred, p_prom, p_am, p_smtp, p_drift = ports
    procs: list[Process] = []
    with SmtpSink(p_smtp) as sink:
        store_path = tmp / "store.sqlite3"
        store_url = f"sqlite:///{store_path}"
        _backfill_2020(store_path, models_dir, tagwatch_settings)
        try:
            predictor = start_process(
                "predictor",
                [sys.executable, "-m", "exporter", "serve"],
                tmp,
                env={
                    "TAGWATCH_HOST": "127.0.0.1",
                    "TAGWATCH_PORT": str(p_pred),
                    "TAGWATCH_WORKERS": "2",
                    "TAGWATCH_MODELS_DIR": str(models_dir),
                    "TAGWATCH_DATA_DIR": str(tagwatch_settings.data_dir),
                    "TAGWATCH_STORE_URL": store_url,
                    "PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc"),
                    # feedback needs the token (token mode, the default); the id secret signs ids
                    **write_secrets(tmp / "secrets"),
                },
                # every path above is absolute; the repository as cwd keeps the packages regular
                # (from elsewhere the editable install imports them as namespace packages)
                cwd=REPO_ROOT,
            )
            procs.append(predictor)
            drift = start_process(
                "drift",
                [sys.executable, "-m", "drift"],
                tmp,
                env={
                    "TAGWATCH_HOST": "127.0.0.1",
                    "TAGWATCH_PORT": str(p_drift),
                    "TAGWATCH_MODELS_DIR": str(models_dir),
                    "TAGWATCH_STORE_URL": store_url,
                    "TAGWATCH_REPORTS_DIR": str(tmp / "reports" / "drift"),
                    "TAGWATCH_STATE_DIR": str(tmp / "drift-state"),
                    "TAGWATCH_RUN_ON_START": "true",
                    "TAGWATCH_CRON": "0 2 * * *",
                    # DriftExplained beside the drift alerts (checked every 2 s here)
                    "TAGWATCH_ALERTMANAGER_API_URL": f"http://127.0.0.1:{p_am}",
                    "TAGWATCH_DRIFT_REPORT_URL": f"http://127.0.0.1:{p_drift}/reports/latest.html",
                    "TAGWATCH_EXPLAIN_INTERVAL_SECONDS": "2",
                },
                cwd=REPO_ROOT,
            )
            procs.append(drift)
            settings = AlertingSettings(
                smtp_host="127.0.0.1",
                smtp_port=p_smtp,
                smtp_require_tls=False,
                smtp_from="tagwatch@example.org",
                alert_email_to="oncall@example.org,ml-team@example.org",
                grafana_url=GRAFANA,
                runbook_base_url=RUNBOOK,
                drift_report_url=f"http://127.0.0.1:{p_drift}/reports/latest.html",
                alertmanager_templates=str(ALERTMANAGER_DIR / "templates" / "*.tmpl"),
            )
            am_cfg = tmp / "alertmanager.yml"
            am_cfg.write_text(yaml.safe_dump(derive_alertmanager_config(settings), width=10_000))
            am_url = f"http://127.0.0.1:{p_am}"
            alertmanager = start_process(
                "alertmanager",
                [
                    "prometheus-alertmanager",
                    f"--config.file={am_cfg}",
                    f"--storage.path={tmp / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{p_am}",
                    f"--web.external-url={am_url}",
                    "--cluster.listen-address=",
                ],
                tmp,
            )
            procs.append(alertmanager)
            prom_cfg = tmp / "prometheus.yml"
            prom_cfg.write_text(
                yaml.safe_dump(
                    derive_prometheus_config(
                        {
                            "predictor": f"127.0.0.1:{p_pred}",
                            "drift": f"127.0.0.1:{p_drift}",
                            "prometheus": f"127.0.0.1:{p_prom}",
                            "alertmanager": f"127.0.0.1:{p_am}",
                        },
                        alertmanager=f"127.0.0.1:{p_am}",
                    )
                )
            )
            prom_url = f"http://127.0.0.1:{p_prom}"
            prometheus = start_process(
                "prometheus",
                [
                    "prometheus",
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={tmp / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{p_prom}",
                    "--rules.alert.resend-delay=1s",
                ],
                tmp,
            )
            procs.append(prometheus)
            wait_until(alertmanager, http_ok(f"{am_url}/-/ready"), "alertmanager ready", 30)
            wait_until(prometheus, http_ok(f"{prom_url}/-/ready"), "prometheus ready", 30)
            wait_until(
                predictor, http_ok(f"http://127.0.0.1:{p_pred}/readyz"), "predictor ready", 90
            )
            yield Stack(
                tmp=tmp,
                sink=sink,
                predictor=predictor,
                prometheus_url=prom_url,
                alertmanager_url=am_url,
                predictor_addr=f"127.0.0.1:{p_pred}",
                drift=drift,
                drift_url=f"http://127.0.0.1:{p_drift}",
                drift_report_url=settings.drift_report_url,
                store_url=store_url,
                models_dir=models_dir,
            )
        finally:
            for p in reversed(procs):
                p.stop()


def _free_ports(n: int) -> list[int]:
    import socket

    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def _backfill_2020(store_path: Path, models_dir: Path, settings: TagwatchSettings) -> None:
    """2,000 real 2020 questions served over the two previous days (two full drift bins)."""
    model = load_artefact(models_dir, "latest").model
    df = load_questions(settings.titles_path)
    questions = df.loc[df["created_at"].dt.year == 2020].iloc[: 2 * DRIFT_QUESTIONS_PER_DAY]
    start = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=2)).timestamp()
    step = 86_400 / DRIFT_QUESTIONS_PER_DAY
    records = []
    for i, row in enumerate(questions.itertuples()):
        a = model.analyse(row.title, row.body)
        records.append(
            PredictionRecord(
                id=f"backfill{i}", created_at=start + i * step, title=row.title, body=row.body,
                tags=a.tags, scores=a.scores, inference_seconds=0.001, model_version="test",
                features=a.features, url=row.url if isinstance(row.url, str) else None,
            )
        )  # fmt: skip
    store = SQLiteStore(store_path)
    store.save_predictions(records)
    store.close()


def _replay(stack: Stack, tagwatch_settings: TagwatchSettings, n: int = 40) -> None:
    """Real 2019 questions through /predict, then their real tags through /feedback."""
    df = load_questions(tagwatch_settings.titles_path)
    late = df.loc[(df["created_at"].dt.year == 2019) & df["url"].notna()].head(n)
    base = f"http://{stack.predictor_addr}"
    for row in late.itertuples():
        r = requests.post(
            f"{base}/predict",
            json={"title": row.title, "body": row.body, "url": row.url},
            headers=FEEDBACK_AUTH,  # as a site backend: the token also lifts the rate limit
            timeout=10,
        )
        assert r.status_code == 200, r.text
        stack.questions.append({**r.json(), "title": row.title, "url": row.url, "true": row.tags})
    for q in stack.questions:
        for _ in range(50):  # the store writes asynchronously: retry until it has the row
            r = requests.post(
                f"{base}/feedback",
                json={"prediction_id": q["prediction_id"], "tags": q["true"]},
                headers=FEEDBACK_AUTH,
                timeout=10,
            )
            if r.status_code == 200:
                q["jaccard"] = r.json()["jaccard"]
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def scenario(stack: Stack, tagwatch_settings: TagwatchSettings) -> Stack:
    """Traffic, then two faults at once: the predictor hangs, a drift feature turns red."""
    # a first sample of the counters at 0, so that increase() sees the traffic
    stack.wait_prom('tagwatch_feedback_total{job="predictor"} == 0', 30)
    _replay(stack, tagwatch_settings)
    # Prometheus has scraped the traffic and the rules have run
    stack.wait_prom('job:tagwatch_feedback:increase1h{job="predictor"} > 0', 30)
    stack.wait_prom('up{job="predictor"} == 1', 10)

    t_fault = time.time()
    stack.predictor.signal(signal.SIGSTOP)

    down = stack.sink.wait_for(_firing("PredictorDown"), 90)
    alerts = stack.prom("/api/v1/alerts")["alerts"]
    active = [a for a in alerts if a["labels"]["alertname"] == "PredictorDown"]
    assert active and active[0]["state"] == "firing", alerts
    fired_at = _ts(active[0]["activeAt"]) + 30  # `for: 30s`
    stack.timings["PredictorDown fault -> inbox s"] = down.received_at - t_fault
    stack.timings["PredictorDown threshold (for elapsed) -> inbox s"] = down.received_at - fired_at

    t_resume = time.time()
    stack.predictor.signal(signal.SIGCONT)
    resolved = stack.sink.wait_for(_resolved("PredictorDown"), 60)
    stack.timings["PredictorDown resume -> resolved email s"] = resolved.received_at - t_resume

    drift = stack.sink.wait_for(_firing("DataDriftDetected"), 120)
    alerts = stack.prom("/api/v1/alerts")["alerts"]
    active = [a for a in alerts if a["labels"]["alertname"] == "DataDriftDetected"]
    assert active, alerts
    red_at = min(_ts(a["activeAt"]) for a in active)  # first evaluation that saw red
    stack.timings["DataDriftDetected red scraped -> inbox s"] = drift.received_at - red_at
    stack.timings["DataDriftDetected threshold (for elapsed) -> inbox s"] = drift.received_at - (
        red_at + 60
    )
    print("\nthreshold-to-inbox latencies:")
    for k, v in stack.timings.items():
        print(f"  {k}: {v:.2f}")
    return stack


def _ts(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _firing(alertname: str) -> Callable[[Mail], bool]:
    return lambda m: m.subject.startswith("[FIRING") and alertname in m.subject


def _resolved(alertname: str) -> Callable[[Mail], bool]:
    return lambda m: m.subject.startswith("[RESOLVED]") and alertname in m.subject


def test_predictor_hang_pages_then_resolves(scenario: Stack) -> None:
    s = scenario
    down = s.sink.wait_for(_firing("PredictorDown"), 1)
    assert down.subject == (
        f"[FIRING:1] CRITICAL PredictorDown: Predictor {s.predictor_addr} is down or not answering"
    )
    assert down.message["From"] == "tagwatch@example.org"
    assert "oncall@example.org" in down.message["To"]
    assert "ml-team@example.org" in down.message["To"]
    text, html = down.part("plain"), down.part("html")
    for body in (text, html):
        assert f"Prometheus could not scrape the predictor at {s.predictor_addr}" in body
        assert "(up = 0)" in body  # the value
        assert f"{RUNBOOK}/docs/runbook.md#predictordown" in body
        assert f"{GRAFANA}/d/tagwatch-predictor" in body
        assert s.drift_report_url in body
        assert "severity=critical" in body
    assert f'href="{RUNBOOK}/docs/runbook.md#predictordown"' in html
    assert "FIRING PredictorDown" in text

    resolved = s.sink.wait_for(_resolved("PredictorDown"), 1)
    assert resolved.subject.startswith("[RESOLVED] CRITICAL PredictorDown")
    assert "Resolved:" in resolved.part("plain")
    assert resolved.received_at > down.received_at
    # the threshold-to-inbox latency of the page (group_wait 1 s in the test routes)
    assert s.timings["PredictorDown threshold (for elapsed) -> inbox s"] < 10


def test_drift_red_sends_warning(scenario: Stack) -> None:
    metrics = requests.get(f"{scenario.drift_url}/metrics", timeout=5).text
    red = {
        line.split('"')[1]
        for line in metrics.splitlines()
        if line.startswith("tagwatch_drift_feature_status{") and line.endswith(" 2.0")
    }
    assert {"oov_ratio", "text"} <= red  # what the drift job judged on 2020 questions
    # the drift process joins DriftExplained to the group within its 2 s poll: the first
    # email may precede it (group_wait 1 s here, 1 min in production), the next one has both
    mail = scenario.sink.wait_for(
        lambda m: _firing("DataDriftDetected")(m) and "DriftExplained" in m.subject, 60
    )
    # one email for the drift job's group: the red features, and the words behind them
    prefix = f"[FIRING:{len(red) + 1}] WARNING drift: "
    assert mail.subject.startswith(prefix), mail.subject
    names = mail.subject.removeprefix(prefix).split(", ")
    assert sorted(names) == ["DataDriftDetected", "DriftExplained"], mail.subject
    text = mail.part("plain")
    explained = [line for line in text.splitlines() if line.startswith("What changed: The ques")]
    assert len(explained) == 1, text
    named = NEW_WORDS & set(explained[0].replace(",", " ").split())
    print(f"DriftExplained: {explained[0]}")
    assert len(named) >= 3, explained
    run = re.search(r"This run's drift report: (http://\S+/reports/\S+T\d{6}Z\.html)", text)
    assert run, text
    page = requests.get(run.group(1), timeout=10)  # the run's own report, not latest
    assert page.status_code == 200 and "tagwatch-what-changed" in page.text
    listed = {
        line.split()[5]
        for line in text.splitlines()
        if line.startswith("What changed: Data drift:")
    }
    assert listed == red  # one warning email listing every red feature, no other
    # how much, against what: the measured effect size and the rule
    assert re.search(
        r"feature oov_ratio differs from the held-out validation questions of the model by an "
        r"effect size of 0\.\d{3}; the rule: red from 0\.070 \(yellow from 0\.050\)",
        text,
    ), text
    assert "the training baseline" not in text
    assert f"{RUNBOOK}/docs/runbook.md#datadriftdetected" in text
    assert f"{GRAFANA}/d/tagwatch-drift" in text
    assert f'href="{scenario.drift_report_url}"' in mail.part("html")
    report = requests.get(scenario.drift_report_url, timeout=10)  # the link works
    assert report.status_code == 200 and "oov_ratio" in report.text


def test_predictor_down_inhibits_quality_alerts(scenario: Stack) -> None:
    """Pushed straight to Alertmanager's API: JaccardLow is suppressed while every predictor
    replica is down (PredictorFleetDown), not while one replica of several is (PredictorDown)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts = [
        {"labels": {"alertname": n, "job": "inhibition-test", "severity": sev}, "startsAt": now}
        for n, sev in (("PredictorFleetDown", "info"), ("JaccardLow", "warning"))
    ]
    url = f"{scenario.alertmanager_url}/api/v2/alerts"
    assert requests.post(url, json=alerts, timeout=5).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {
            a["labels"]["alertname"]: a["status"]
            for a in requests.get(url, params={"filter": 'job="inhibition-test"'}, timeout=5).json()
        }
        if got.get("JaccardLow", {}).get("state") == "suppressed":
            break
        time.sleep(0.3)
    assert got["JaccardLow"]["state"] == "suppressed", got
    assert got["JaccardLow"]["inhibitedBy"], got
    assert got["PredictorFleetDown"]["state"] == "active", got

    # warnings of one job make one email whose subject names each alert once
    mixed = [
        {"labels": {"alertname": n, "job": "mixed-test", "severity": "warning", **extra},
         "startsAt": now}
        for n, extra in (("DataDriftDetected", {"feature": "a"}),
                         ("DataDriftDetected", {"feature": "b"}), ("DriftJobFailing", {}))
    ]  # fmt: skip
    assert requests.post(url, json=mixed, timeout=5).status_code == 200
    mail = scenario.sink.wait_for(lambda m: "mixed-test" in m.subject, 15)
    head, _, names = mail.subject.partition(" WARNING mixed-test: ")
    # the drift process may have joined its DriftExplained to this group (it explains every
    # active DataDriftDetected): one more alert, named once too
    listed = names.split(", ")
    assert head == f"[FIRING:{3 + listed.count('DriftExplained')}]", mail.subject
    assert sorted(n for n in listed if n != "DriftExplained") == [
        "DataDriftDetected",
        "DriftJobFailing",
    ]
    # the inhibited alert never reached the inbox (the scenario's own replay may fire a real
    # JaccardLow of job tagwatch: only this test's job counts)
    assert not any(
        "inhibition-test" in m.subject + m.part("plain") and "JaccardLow" in m.part("plain")
        for m in scenario.sink.mails
    )


def test_weekly_summary_email(scenario: Stack, tmp_path: Path) -> None:
    s = scenario
    reports = tmp_path / "reports"
    proc = start_process(
        "weekly",
        [sys.executable, "-m", "alerting", "run-once"],
        tmp_path,
        env={
            "TAGWATCH_PROMETHEUS_URL": s.prometheus_url,
            "TAGWATCH_STORE_URL": s.store_url,
            "TAGWATCH_SMTP_HOST": "127.0.0.1",
            "TAGWATCH_SMTP_PORT": str(s.sink.port),
            "TAGWATCH_SMTP_FROM": "tagwatch@example.org",
            "TAGWATCH_ALERT_EMAIL_TO": "oncall@example.org",
            "TAGWATCH_WEEKLY_EMAIL_TO": "ml-team@example.org",
            "TAGWATCH_REPORTS_DIR": str(reports),
            "TAGWATCH_PREDICTOR_URL": f"http://{s.predictor_addr}",
            "TAGWATCH_MODELS_DIR": str(s.models_dir),
        },
        cwd=REPO_ROOT,  # every path above is absolute
    )
    assert proc.popen.wait(timeout=120) == 0, proc.log_tail()
    mail = s.sink.wait_for(lambda m: "Weekly summary" in m.subject, 10)
    assert mail.message["To"] == "ml-team@example.org"
    assert "section(s) missing" not in mail.subject, mail.part("plain")
    text, html = mail.part("plain"), mail.part("html")
    # volume of the last day: the replayed questions and their feedback
    day = time.strftime("%a %d %b", time.gmtime())
    today = [line for line in text.splitlines() if line.startswith(day)]
    assert len(today) == 1, text
    predictions, feedback = (float(v) for v in today[0].split()[3:5])
    assert predictions >= len(s.questions) - 2, today  # increase() extrapolates a little
    assert feedback >= len(s.questions) - 2, today
    # alert episodes: the page of the scenario
    assert "PredictorDown (critical): 1 episode(s)" in text
    assert "oov_ratio: red / red" in text
    # what changed: the week's 2020 questions against the model's 2011 baseline, named
    assert "== What changed this week ==" in text and "text AUC" in text
    changed = text.split("== What changed this week ==")[1].split("== Alerts ==")[0]
    assert len(NEW_WORDS & set(changed.replace(",", " ").split())) >= 3, changed
    assert "NEW since last week" in changed  # the replayed 2019 feedback brought new tags
    # problematic questions, linked to StackOverflow (replayed questions carry their URL)
    lowest = min(q["jaccard"] for q in s.questions)
    worst = [q for q in s.questions if q["jaccard"] == lowest][-1]  # the latest is listed first
    assert worst["title"] in text
    assert f'href="{worst["url"]}"' in html
    # three inline charts, referenced by Content-ID
    images = [p for p in mail.message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 3
    for img in images:
        cid = str(img["Content-ID"]).strip("<>")
        assert f"cid:{cid}" in html
        assert img.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    # the file written before sending: standalone, images as data URIs
    files = list((reports).glob("*.html"))
    assert len(files) == 1
    assert files[0].read_text().count("data:image/png;base64,") == 3
