"""The weekly summary on a store past its text retention, and the pruning of dated reports."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry

from alerting.metrics import WeeklyMetrics
from alerting.weekly import run_weekly
from store import SQLiteStore

from .conftest import SmtpSink
from .test_weekly import END, _settings, _store


def test_weekly_works_on_blanked_rows_and_prunes_old_dated_reports(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    _store(tmp_path / "store.sqlite3")
    store = SQLiteStore(tmp_path / "store.sqlite3")
    assert store.prune(text_before=END.timestamp(), rows_before=-math.inf) == (2, 0)
    store.close()
    reports = tmp_path / "reports"
    reports.mkdir()
    old = [reports / "2026-08-01.html", reports / "2026-08-01.txt"]  # > 90 days before END
    kept = reports / "2026-11-16.html"
    for p in (*old, kept, reports / "notes.html"):
        p.write_text("x")
    path = run_weekly(
        _settings(tmp_path, smtp_sink.port, retention_days=90),
        WeeklyMetrics(CollectorRegistry()),
        end=END,
    )
    text = path.with_suffix(".txt").read_text()
    # the problematic questions are still listed (features and feedback kept), without text
    assert text.count("(text removed: retention)") >= 2
    assert "http://predictor.test:8000/predictions/p1" in text
    assert "Question number" not in text
    assert not any(p.exists() for p in old)
    assert kept.exists() and (reports / "notes.html").exists() and path.exists()
