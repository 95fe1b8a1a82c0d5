"""The drift job on rows whose text retention blanked: the same judgement; old reports pruned."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from tests.drift.conftest import DriftCase


def test_blanked_rows_give_the_same_judgement_and_old_reports_go(case: DriftCase) -> None:
    case.replay(case.later(2019).iloc[:2000], per_bin=1000, feedback_every=5)
    now = case.day0 + pd.Timedelta(days=2, hours=1)
    before, _ = case.run(now)
    assert before.ok and before.bins_judged == 2

    blanked, deleted = case.store.prune(text_before=now.timestamp(), rows_before=-math.inf)
    assert (blanked, deleted) == (2000, 0)
    reports = case.settings.reports_dir
    old = reports / f"{(now - pd.Timedelta(days=91)).date().isoformat()}.html"
    recent = reports / f"{(now - pd.Timedelta(days=89)).date().isoformat()}.html"
    old.write_text("old")
    recent.write_text("recent")
    shutil.rmtree(case.settings.state_dir)  # a cold run reads every (blanked) row again
    after, _ = case.run(now)
    assert after.ok and after.new_rows == 2000
    # the counts give the same judgement; the text, blanked, is "not enough text" (no light)
    assert "text" in before.statuses and "text" not in after.statuses
    assert after.statuses == {f: s for f, s in before.statuses.items() if f != "text"}
    assert after.values == pytest.approx({f: v for f, v in before.values.items() if f != "text"})
    summary = json.loads((reports / "latest.json").read_text())
    assert summary["text"]["status"] == "not enough text" and "features" in summary
    assert not old.exists() and recent.exists()
    assert (reports / "latest.html").is_file() and after.report_path.is_file()
