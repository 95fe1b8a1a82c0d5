"""The drift job on rows whose text retention blanked: the same judgement; old reports pruned."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from drift.job import run_once
from drift.metrics import DriftMetrics
from drift.settings import DriftSettings
from store import SQLiteStore
from tagger.train import Split


def test_blanked_rows_give_the_same_judgement_and_old_reports_go(
    drift_settings: DriftSettings,
    store: SQLiteStore,
    replayer: Callable[..., int],
    split: Split,
    day0: pd.Timestamp,
) -> None:
    later = split.later.loc[split.later["created_at"].dt.year == 2019]
    replayer(store, later.iloc[:2000], per_bin=1000, feedback_every=5)
    now = day0 + pd.Timedelta(days=2, hours=1)
    before = run_once(drift_settings, DriftMetrics(CollectorRegistry()), now=now)
    assert before.ok and before.bins_judged == 2

    blanked, deleted = store.prune(text_before=now.timestamp(), rows_before=-math.inf)
    assert (blanked, deleted) == (2000, 0)
    reports = drift_settings.reports_dir
    old = reports / f"{(now - pd.Timedelta(days=91)).date().isoformat()}.html"
    recent = reports / f"{(now - pd.Timedelta(days=89)).date().isoformat()}.html"
    old.write_text("old")
    recent.write_text("recent")
    shutil.rmtree(drift_settings.state_dir)  # a cold run reads every (blanked) row again
    after = run_once(drift_settings, DriftMetrics(CollectorRegistry()), now=now)
    assert after.ok and after.new_rows == 2000
    assert after.statuses == before.statuses
    assert after.values == pytest.approx(before.values)
    assert not old.exists() and recent.exists()
    assert (reports / "latest.html").is_file() and after.report_path.is_file()
