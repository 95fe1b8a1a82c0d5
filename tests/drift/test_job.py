"""The job's incremental counts, dropped bins and bad input, through the real store."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from drift.settings import DriftSettings
from drift.state import STATE_FILE
from tests.drift.conftest import DriftCase, run_job


def test_incremental_run_reads_only_new_rows_and_matches_a_cold_start(case: DriftCase) -> None:
    later, day0 = case.later(2019), case.day0
    case.replay(later.iloc[:2000], per_bin=1000)
    first, _ = case.run(day0 + pd.Timedelta(days=2, hours=1))
    assert first.ok and first.new_rows == 2000 and first.bins_judged == 2
    assert (case.settings.state_dir / STATE_FILE).is_file()

    case.replay(later.iloc[2000:4000], per_bin=1000, start=day0 + pd.Timedelta(days=2), prefix="b")
    now = day0 + pd.Timedelta(days=4, hours=1)
    incremental, reg = case.run(now)
    assert incremental.ok and incremental.new_rows == 2000  # the first 2,000 were not re-read
    assert incremental.bins_judged == 4 and incremental.rows_analysed == 4000

    shutil.rmtree(case.settings.state_dir)
    cold, _ = case.run(now)
    assert cold.new_rows == 4000
    assert cold.statuses == incremental.statuses
    assert cold.values == pytest.approx(incremental.values)
    assert reg.get_sample_value("tagwatch_drift_runs_total") == 1


def test_partial_and_small_bins_are_not_judged(case: DriftCase) -> None:
    holdout, day0 = case.split.holdout, case.day0
    case.replay(holdout.iloc[:1000], per_bin=1000)  # day 0: complete, judged
    case.replay(holdout.iloc[1000:1050], per_bin=50, start=day0 + pd.Timedelta(days=1), prefix="s")
    case.replay(holdout.iloc[1050:1900], per_bin=850, start=day0 + pd.Timedelta(days=2), prefix="p")
    # day 1 has 50 rows (< 100), day 2 is the current, partial day
    result, reg = case.run(day0 + pd.Timedelta(days=2, hours=23))
    assert result.ok
    assert result.bins_judged == 1 and result.bins_dropped == 1 and result.rows_analysed == 1000
    assert result.latest_bin == day0
    assert reg.get_sample_value("tagwatch_drift_bins_judged") == 1


def test_short_bins_for_demos(case: DriftCase) -> None:
    # 24 questions an hour for a day, then the current hour: 23 complete hours of 24 rows
    case.replay(case.split.holdout.iloc[:600], per_bin=576)
    now = case.day0 + pd.Timedelta(hours=23, minutes=30)
    result, _ = case.run(now, bin_size="1h", min_rows_per_bin=20)
    assert result.ok and result.bins_judged == 23
    assert result.latest_bin == case.day0 + pd.Timedelta(hours=22)


def test_empty_store_is_a_clear_no_data_state(
    case: DriftCase, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="drift"):
        result, reg = case.run(pd.Timestamp("2026-03-10", tz="UTC"))
    assert result.ok and result.bins_judged == 0
    assert "nothing to judge" in caplog.text and "at least 100 rows" in caplog.text
    assert reg.get_sample_value("tagwatch_drift_bins_judged") == 0
    assert reg.get_sample_value("tagwatch_drift_feature_status", {"feature": "oov_ratio"}) is None
    assert reg.get_sample_value("tagwatch_drift_last_success_timestamp_seconds") > 0
    latest = (case.settings.reports_dir / "latest.html").read_text()
    assert "waiting for the first complete bin" in latest and "<code>test</code>" in latest
    waiting = json.loads((case.settings.reports_dir / "latest.json").read_text())
    assert waiting["model_version"] == "test" and "at least 100 rows" in waiting["waiting"]
    assert waiting["text"] is None and "previous_report" not in waiting


def test_too_few_rows(case: DriftCase) -> None:
    case.replay(case.split.holdout.iloc[:60], per_bin=30)
    result, reg = case.run(case.day0 + pd.Timedelta(days=5))
    assert result.ok and result.bins_judged == 0 and result.bins_dropped == 2
    assert reg.get_sample_value("tagwatch_drift_failures_total") == 0


def test_missing_model_is_counted_as_a_failure(
    drift_settings: DriftSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = drift_settings.model_copy(update={"models_dir": tmp_path / "no-models"})
    with caplog.at_level(logging.ERROR, logger="drift"):
        result, reg = run_job(settings, pd.Timestamp("2026-03-10", tz="UTC"))
    assert not result.ok and "no model trained yet" in str(result.error)
    assert "drift run failed" in caplog.text and "LATEST" in caplog.text
    assert reg.get_sample_value("tagwatch_drift_failures_total") == 1
    assert reg.get_sample_value("tagwatch_drift_runs_total") == 1
    assert reg.get_sample_value("tagwatch_drift_last_success_timestamp_seconds") == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"\x00\x01garbage\n\x00"), "baseline"),
        (lambda p: p.write_text("created_at,title_chars\n2011-01-01,3\n"), "lacks column"),
        (lambda p: p.unlink(), "unreadable baseline"),
    ],
)
def test_bad_baseline_names_the_file(
    drift_settings: DriftSettings,
    models_dir: Path,
    tmp_path: Path,
    damage: Callable[[Path], object],
    message: str,
) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    baseline = copy / "test" / "baseline.csv"
    damage(baseline)
    settings = drift_settings.model_copy(update={"models_dir": copy})
    result, reg = run_job(settings, pd.Timestamp("2026-03-10", tz="UTC"))
    assert not result.ok
    assert str(baseline) in str(result.error) and message in str(result.error)
    assert reg.get_sample_value("tagwatch_drift_failures_total") == 1


def test_after_a_promotion_latest_names_the_new_version_and_links_the_last_report(
    case: DriftCase, models_dir: Path, tmp_path: Path
) -> None:
    """The page every email links never says only "nothing judged": after a promotion it
    names the served version and links the previous version's last report, which stays."""
    case.replay(case.later(2020).iloc[:2000], per_bin=1000)
    first, _ = case.run(case.day0 + pd.Timedelta(days=2, hours=1))
    assert first.ok and first.bins_judged == 2 and first.report_path is not None
    words = json.loads(first.report_path.with_suffix(".json").read_text())["text"]
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    shutil.copytree(copy / "test", copy / "v2")
    card = json.loads((copy / "v2" / "model_card.json").read_text())
    (copy / "v2" / "model_card.json").write_text(json.dumps({**card, "version": "v2"}))
    (copy / "LATEST").write_text("v2\n")
    # the rows were served by "test": v2 has nothing of its own to judge yet
    second, _ = case.run(case.day0 + pd.Timedelta(days=2, hours=2), models_dir=copy)
    assert second.ok and second.bins_judged == 0
    latest = (case.settings.reports_dir / "latest.html").read_text()
    assert "waiting for the first complete bin" in latest and "<code>v2</code>" in latest
    assert f"href='{first.report_path.name}'" in latest and "<code>test</code>" in latest
    assert words["current_words"][0]["word"] in latest and "red: " in latest
    waiting = json.loads((case.settings.reports_dir / "latest.json").read_text())
    assert waiting["previous_report"] == first.report_path.name
    assert first.report_path.is_file() and first.report_path.with_suffix(".json").is_file()
