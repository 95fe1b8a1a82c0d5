"""The weekly summary without Prometheus: pure parts, degraded reports, SMTP behaviour
(real aiosmtpd sink, STARTTLS + AUTH with a self-signed certificate), the scheduler process."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import requests
from aiosmtpd.smtp import AuthResult, LoginPassword
from prometheus_client import CollectorRegistry

from alerting.mailer import MailError
from alerting.metrics import WeeklyMetrics
from alerting.prom import Series
from alerting.settings import AlertingSettings
from alerting.weekly import alert_episodes, question_link, run_weekly, runbook_advice
from store import FeedbackRecord, PredictionRecord, SQLiteStore
from tagger.artefact import load_artefact
from tagger.columns import FEATURE_COLUMNS
from tagger.data import load_questions
from tagger.model import TagModel
from tagger.settings import TagwatchSettings
from tagger.tagquality import TagQualityRules
from tests.processes import NEW_TAGS, NEW_WORDS, http_ok, start_process, wait_until

from .conftest import REPO_ROOT, SmtpSink

END = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def test_alert_episodes_counts_runs_and_minutes() -> None:
    t0 = END.timestamp()
    series = [
        # two episodes of PredictorDown on one instance: 3 min, a gap, then 2 min
        Series(
            {"alertname": "PredictorDown", "severity": "critical", "instance": "a:8000"},
            [(t0 + 60 * i, 1.0) for i in (0, 1, 2, 10, 11)],
        ),
        Series(
            {"alertname": "DataDriftDetected", "severity": "warning", "feature": "oov_ratio"},
            [(t0 + 60 * i, 1.0) for i in range(30)],
        ),
    ]
    summary = alert_episodes(series)
    assert [(a.alertname, a.episodes, a.minutes) for a in summary] == [
        ("PredictorDown", 2, 5.0),  # critical first
        ("DataDriftDetected", 1, 30.0),
    ]
    assert summary[0].labels == ["instance=a:8000"]
    assert summary[1].labels == ["feature=oov_ratio"]


def test_question_link_prefers_the_question_url() -> None:
    base = "http://predictor:8000"
    assert question_link({"id": "x", "url": "https://stackoverflow.com/q/1"}, base) == (
        "https://stackoverflow.com/q/1"
    )
    assert question_link({"id": "abc", "url": None}, base) == f"{base}/predictions/abc"
    assert question_link({"id": "abc", "url": "javascript:x"}, base) == f"{base}/predictions/abc"


def _store(path: Path) -> None:
    store = SQLiteStore(path)
    features: dict[str, object] = dict.fromkeys(FEATURE_COLUMNS, 0)
    features.update(top_tag="(none)", oov_ratio=0.9)
    for i, url in enumerate(["https://stackoverflow.com/q/42", None]):
        store.save_prediction(
            PredictionRecord(
                id=f"p{i}",
                created_at=END.timestamp() - 3600,
                title=f"Question number {i}",
                body="",
                tags=[],
                scores={},
                inference_seconds=0.001,
                model_version="t",
                features=features,
                url=url,
            )
        )
        source = "token" if i == 0 else "open"  # who sent it (issue 15)
        store.save_feedback(
            FeedbackRecord(f"p{i}", ["python"], 0.0, 0.0, 1, END.timestamp(), source=source)
        )
    store.close()


def _settings(tmp_path: Path, smtp_port: int, **kw: object) -> AlertingSettings:
    values: dict[str, object] = dict(
        prometheus_url="http://127.0.0.1:9",  # nothing listens: Prometheus unreachable
        prometheus_timeout_seconds=2,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        reports_dir=tmp_path / "reports",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        weekly_email_to="ml@example.org",
        smtp_attempts=3,
        smtp_backoff_seconds=0.5,
        predictor_url="http://predictor.test:8000",
    )
    values.update(kw)
    return AlertingSettings(**values)  # type: ignore[arg-type]


def test_prometheus_down_report_names_missing_sections(
    tmp_path: Path, smtp_sink: SmtpSink, models_dir: Path
) -> None:
    _store(tmp_path / "store.sqlite3")
    metrics = WeeklyMetrics(CollectorRegistry())
    path = run_weekly(_settings(tmp_path, smtp_sink.port, models_dir=models_dir), metrics, end=END)
    assert path == tmp_path / "reports" / "2026-11-23.html"
    mail = smtp_sink.wait_for(lambda m: "Weekly summary" in m.subject, 5)
    assert mail.subject == (
        "[tagwatch] Weekly summary 2026-11-16 to 2026-11-23: 0 alert episode(s), "
        "4 section(s) missing"
    )
    text = mail.part("plain")
    for section in ("latency and 5xx per day", "alert episodes",
                    "drift status per feature", "retraining"):  # fmt: skip
        assert f"- {section}: Prometheus at http://127.0.0.1:9 unreachable" in text
    # the store part is still there, with links
    assert "Question number 0\r\n  https://stackoverflow.com/q/42" in text
    assert "Question number 1\r\n  http://predictor.test:8000/predictions/p1" in text
    assert 'href="https://stackoverflow.com/q/42"' in mail.part("html")
    # the week's feedback per credential it came with
    assert "Feedback of the week by source: open 1, token 1" in text
    assert "<b>open</b> 1, <b>token</b> 1" in mail.part("html")
    assert metrics.missing_sections._value.get() == 4
    assert metrics.emails_sent._value.get() == 1
    assert metrics.last_success._value.get() > 0
    assert "Missing sections" in path.read_text()


def test_smtp_outage_keeps_the_file_retries_with_backoff_and_counts_failure(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    delays: list[float] = []
    metrics = WeeklyMetrics(CollectorRegistry())
    settings = _settings(tmp_path, free_port(), store_url="sqlite:///missing.sqlite3")
    with pytest.raises(MailError, match="not delivered after 3 attempts"):
        run_weekly(settings, metrics, end=END, sleep=delays.append)
    assert delays == [0.5, 1.0]
    assert metrics.failures._value.get() == 1
    assert metrics.last_success._value.get() == 0
    report = (tmp_path / "reports" / "2026-11-23.html").read_text()
    assert "problematic questions" in report and "store not found" in report


class _Auth:
    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login == b"tagwatch" and auth_data.password == b"pa55word"
        )
        return AuthResult(success=ok)


def test_starttls_and_auth_with_password_file(tmp_path: Path, free_port: Callable[[], int]) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secret = tmp_path / "smtp_password"
    secret.write_text("pa55word\n")
    port = free_port()
    with SmtpSink(
        port, tls_context=context, require_starttls=True, authenticator=_Auth(),
        auth_require_tls=True,
    ) as sink:  # fmt: skip
        settings = _settings(
            tmp_path, port, smtp_require_tls=True, smtp_tls_ca_file=cert,
            smtp_username="tagwatch", smtp_password_file=secret,
        )  # fmt: skip
        run_weekly(settings, WeeklyMetrics(CollectorRegistry()), end=END)
        mail = sink.wait_for(lambda m: True, 5)
        assert "Weekly summary" in mail.subject
        assert mail.message["To"] == "ml@example.org"


def test_scheduler_process_serves_metrics(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    proc = start_process(
        "weekly-serve",
        [sys.executable, "-m", "alerting", "serve"],
        tmp_path,
        env={"TAGWATCH_WEEKLY_PORT": str(port), "TAGWATCH_WEEKLY_CRON": "0 8 * * mon"},
        cwd=REPO_ROOT,
    )
    try:
        wait_until(proc, http_ok(f"http://127.0.0.1:{port}/metrics"), "weekly /metrics", 30)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for name in ("tagwatch_weekly_last_success_timestamp_seconds 0.0",
                     "tagwatch_weekly_runs_total 0.0", "tagwatch_weekly_failures_total 0.0",
                     "tagwatch_weekly_emails_sent_total 0.0"):  # fmt: skip
            assert name in text
        time.sleep(0.5)
        assert "scheduled '0 8 * * mon' UTC" in proc.log_tail(200)
    finally:
        proc.stop()


def test_bad_cron_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alerting", "serve"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
        env={"PATH": "/usr/bin:/bin", "TAGWATCH_WEEKLY_CRON": "every monday"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "TAGWATCH_WEEKLY_CRON='every monday'" in result.stderr


def test_weekly_counts_equal_the_store(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """Predictions and feedback per day are the store's exact counts (not increase())."""
    store = SQLiteStore(tmp_path / "store.sqlite3")
    features: dict[str, object] = dict.fromkeys(FEATURE_COLUMNS, 1)
    features.update(top_tag="python", oov_ratio=0.1)
    # 3,672 predictions over the 7 days before END (uneven per day), a few outside the week,
    # every 3rd with feedback; day d holds (d + 1) * 131 predictions minus what is left
    start = END.timestamp() - 7 * 86400
    times = [start - 3600 * (i + 1) for i in range(5)]  # before the week: not counted
    per_day = [(d + 1) * 131 for d in range(7)]
    per_day[-1] += 3672 - sum(per_day)
    for d, n in enumerate(per_day):
        times += [start + d * 86400 + (i + 0.5) * 86400 / n for i in range(n)]
    times += [END.timestamp() + 10]  # after the end: not counted
    records = [
        PredictionRecord(
            id=f"c{i}",
            created_at=t,
            title=f"q{i}",
            body="",
            tags=["python"],
            scores={"python": 0.9},
            inference_seconds=0.001,
            model_version="t",
            features=features,
        )
        for i, t in enumerate(times)
    ]
    store.save_predictions(records)
    with_feedback = [r for i, r in enumerate(records) if i % 3 == 0]
    for r in with_feedback:
        store.save_feedback(FeedbackRecord(r.id, ["python", "x"], 0.5, 0.5, 0, r.created_at + 5))
    store.close()
    in_week = [r for r in records if start <= r.created_at < END.timestamp()]
    assert len(in_week) == 3672

    path = run_weekly(
        _settings(tmp_path, smtp_sink.port), WeeklyMetrics(CollectorRegistry()), end=END
    )
    text = path.with_suffix(".txt").read_text()
    weekdays = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    rows = [
        line.split()
        for line in text.splitlines()
        if line[:3] in weekdays and len(line.split()) == 11
    ]
    assert len(rows) == 7, text
    predictions = [int(r[3]) for r in rows]
    feedback = [int(r[4]) for r in rows]
    assert predictions == per_day
    assert sum(predictions) == len(in_week)
    assert sum(feedback) == sum(1 for r in with_feedback if start <= r.created_at < END.timestamp())
    assert [r[9:11] for r in rows] == [["0.500", "0.500"]] * 7  # coverage, Jaccard: the store
    assert "latency and 5xx per day: Prometheus at http://127.0.0.1:9 unreachable" in text


def test_runbook_advice_quotes_the_first_steps() -> None:
    advice = runbook_advice(
        ["JaccardLow", "PredictorLatencySLOBurnFast", "PredictorDown"], "http://127.0.0.1:8001"
    )
    by_name = {a.alertname: a for a in advice}
    assert by_name["PredictorDown"].steps.startswith("Fix: restart the predictor")
    assert by_name["PredictorDown"].link == "http://127.0.0.1:8001/docs/runbook.md#predictordown"
    assert by_name["PredictorLatencySLOBurnFast"].link.endswith("#predictorlatencysloburn")
    assert by_name["PredictorLatencySLOBurnFast"].steps.startswith("Fix: add workers")
    assert by_name["JaccardLow"].steps  # no Fix:/Check: of its own: its first paragraph


def test_retrain_line_tells_the_week_and_the_drift_kind() -> None:
    from alerting.weekly import retrain_line

    assert retrain_line({"failed": 0.0}, None, None, None, 0.5) == "No retrain this week."
    line = retrain_line({"promoted": 1.0, "rejected": 2.0}, 0.122, 0.2, 1.0, 0.5)
    assert line == (
        "Retrains this week: 1 promoted, 2 rejected; last gate: Jaccard champion 0.122 vs "
        "challenger 0.200; data drift: retraining recovered 100% of the Jaccard gap."
    )
    assert "concept drift suspected: retraining is not enough" in retrain_line(
        {"rejected": 1.0}, 0.12, 0.125, 0.07, 0.5
    )


def _served(
    model: TagModel, questions: pd.DataFrame, start: float, step: float, prefix: str
) -> tuple[list[PredictionRecord], list[FeedbackRecord]]:
    """Real questions served by the model from ``start``, each with its real tags as feedback."""
    records, feedback = [], []
    for i, row in enumerate(questions.itertuples()):
        a = model.analyse(row.title, row.body)
        t = start + i * step
        records.append(
            PredictionRecord(
                id=f"{prefix}{i}", created_at=t, title=row.title, body=row.body, tags=a.tags,
                scores=a.scores, inference_seconds=0.001, model_version="test",
                features=a.features, url=row.url,
            )
        )  # fmt: skip
        feedback.append(FeedbackRecord(f"{prefix}{i}", list(row.tags), 0.0, 0.0, 0, t + 60))
    return records, feedback


def _two_weeks(
    tmp_path: Path,
    smtp_sink: SmtpSink,
    models_dir: Path,
    last_week: pd.DataFrame,
    this_week: pd.DataFrame,
) -> Path:
    """Serve ``last_week`` then ``this_week`` (each spread over its week before END, every
    question with feedback) into a store, run the weekly job; its HTML report's path."""
    model = load_artefact(models_dir).model
    week = 7 * 86_400
    store = SQLiteStore(tmp_path / "store.sqlite3")
    for questions, start, prefix in ((last_week, END.timestamp() - 2 * week, "a"),
                                     (this_week, END.timestamp() - week, "b")):  # fmt: skip
        records, feedback = _served(model, questions, start, week / len(questions), prefix)
        store.save_predictions(records)
        for f in feedback:
            store.save_feedback(f)
    store.close()
    settings = _settings(tmp_path, smtp_sink.port, models_dir=models_dir)
    return run_weekly(settings, WeeklyMetrics(CollectorRegistry()), end=END)


def test_what_changed_this_week_names_the_new_tags_and_words(
    tmp_path: Path, smtp_sink: SmtpSink, models_dir: Path, tagwatch_settings: TagwatchSettings
) -> None:
    """2019 questions this week against 2011 ones the week before: the section lists the tags
    and words of 2019, and marks the tags last week did not have."""
    df = load_questions(tagwatch_settings.titles_path)
    this_week = df.loc[df["created_at"].dt.year == 2019].iloc[:1500]
    last_week = df.loc[df["created_at"].dt.year == 2011].iloc[-800:]
    path = _two_weeks(tmp_path, smtp_sink, models_dir, last_week, this_week)
    text = path.with_suffix(".txt").read_text()
    changed = text.split("== What changed this week ==")[1].split("== Alerts ==")[0]
    print(changed)
    tags = [
        line.split()[0] for line in changed.splitlines() if line.startswith("  ") and "(" in line
    ]
    assert len(NEW_TAGS & set(tags[:15])) >= 5, tags
    new = {line.split()[0] for line in changed.splitlines() if line.endswith("NEW since last week")}
    assert new and new < set(tags)  # some tags were already there last week: not marked
    words = changed.split("New words: ")[1].splitlines()[0]
    assert len(NEW_WORDS & set(words.replace(",", " ").split())) >= 3, words
    assert "text AUC" in changed and "(red;" in changed
    assert changed.count("https://stackoverflow.com/") >= 3  # three typical questions, linked
    html = path.read_text()
    assert 'id="what-changed"' in html and 'id="new-tags"' in html


@pytest.mark.slow
def test_tags_getting_worse_names_a_renamed_tag_first(
    tmp_path: Path, smtp_sink: SmtpSink, models_dir: Path, tagwatch_settings: TagwatchSettings
) -> None:
    """The model's own validation period, served in two weeks with real tags as feedback; this
    week users write ``js`` for ``javascript``: javascript tops "Tags getting worse" with its
    F1 against the baseline and last week's F1, counted in the store's SQL."""
    df = load_questions(tagwatch_settings.titles_path)
    recent = df.loc[df["created_at"].dt.year == 2011]
    last_week, this_week = recent.iloc[-1400:-700], recent.iloc[-700:]
    renamed = [["js" if t == "javascript" else t for t in tags] for tags in this_week["tags"]]
    this_week = this_week.assign(tags=renamed)
    path = _two_weeks(tmp_path, smtp_sink, models_dir, last_week, this_week)
    text = path.with_suffix(".txt").read_text()
    worse = text.split("== Tags getting worse ==")[1].split("== Tags getting better ==")[0]
    better = text.split("== Tags getting better ==")[1].split("== Alerts ==")[0]
    print(worse + better)
    assert "700 questions" in worse
    assert f"support of at least {TagQualityRules().min_support}" in worse
    rows = [line.split() for line in worse.splitlines() if line.startswith("  ")]
    assert rows[0][0] == "javascript:" and rows[0][2] == "0.000", rows[0]
    assert "(-" in " ".join(rows[0]) and "recall 0.000" in " ".join(rows[0])
    last_week_f1 = float(rows[0][-1])
    assert last_week_f1 > 0.2  # last week, before the rename, javascript was fine
    assert 1 <= len(rows) <= 10 and better.strip()
    html = path.read_text()
    assert 'id="tags-worse"' in html and "<code>javascript</code>" in html
