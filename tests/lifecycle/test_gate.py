"""The gate's rules, the drift verdict and the data set split (pure functions)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lifecycle.dataset import DatasetError, build_dataset, labelled_questions, split_recent
from lifecycle.gate import GateRules, decide, drift_verdict, recovery_share
from lifecycle.settings import LifecycleSettings

CHAMP = {"jaccard": 0.12, "coverage": 0.13}


def test_promotes_only_when_every_rule_holds() -> None:
    rules = GateRules(min_jaccard_gain=0.01, max_coverage_drop=0.0, min_holdout_rows=200)
    ok = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.21}, 1000, rules)
    assert ok.promote and ok.failed == []
    small_gain = decide(CHAMP, {"jaccard": 0.125, "coverage": 0.21}, 1000, rules)
    assert not small_gain.promote and small_gain.failed == ["jaccard_gain"]
    assert "margin 0.0100" in small_gain.reason
    cov = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.12}, 1000, rules)
    assert cov.failed == ["coverage"] and "coverage 0.1200 vs champion 0.1300" in cov.reason
    few = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.21}, 150, rules)
    assert few.failed == ["min_rows"] and "150 questions" in few.reason


def test_each_rule_has_an_off_switch() -> None:
    settings = LifecycleSettings(
        gate_require_jaccard_gain=False, gate_require_coverage=False, gate_require_min_rows=False
    )
    rules = GateRules.from_settings(settings)
    assert rules == GateRules(None, None, None)
    assert decide(CHAMP, {"jaccard": 0.10, "coverage": 0.01}, 3, rules).promote
    on = GateRules.from_settings(LifecycleSettings(gate_min_jaccard_gain=0.05))
    assert on.min_jaccard_gain == 0.05 and on.min_holdout_rows == 200


def test_no_champion_promotes_the_first_model() -> None:
    d = decide(None, {"jaccard": 0.2, "coverage": 0.2}, 500, GateRules())
    assert d.promote and d.reason == "no champion yet"


def test_recovery_share_tells_data_from_concept_drift() -> None:
    # validation 0.19, live 0.12: retraining back to 0.19 recovers all of the gap
    assert recovery_share(0.19, 0.12, 0.19) == pytest.approx(1.0)
    assert recovery_share(0.19, 0.12, 0.25) == 1.0  # clipped
    assert recovery_share(0.19, 0.12, 0.10) == 0.0
    assert recovery_share(0.19, 0.12, 0.135) == pytest.approx(0.2143, abs=1e-4)
    assert recovery_share(0.19, 0.19, 0.25) is None  # no gap, no verdict
    assert recovery_share(math.nan, 0.1, 0.2) is None
    assert drift_verdict(0.9, 0.5).startswith("data drift")
    assert drift_verdict(0.2, 0.5).startswith("concept drift suspected: retraining is not enough")
    assert drift_verdict(None, 0.5).startswith("no quality gap")


def _frame(n: int) -> pd.DataFrame:
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "created_at": [t0 + pd.Timedelta(hours=i) for i in range(n)],
            "title": [f"question {i}" for i in range(n)],
            "body": [""] * n,
            "tags": [["Python", " pandas "] if i % 2 else ["rust"] for i in range(n)],
            "predicted": [[] for _ in range(n)],
        }
    )


def test_hold_out_is_the_latest_slice_by_share_or_days() -> None:
    df = labelled_questions(_frame(100))
    assert df["tags"].iloc[1] == ["pandas", "python"]  # normalised like the metrics do
    before, recent = split_recent(df, 0.2)
    assert len(recent) == 20 and recent["created_at"].min() > before["created_at"].max()
    before, recent = split_recent(df, 0.2, days=1.0)
    assert len(recent) == 24  # the last 24 hours


def test_vocabulary_comes_from_the_window_even_with_original_data() -> None:
    original = _frame(300).assign(tags=[["c#"]] * 300)
    data = build_dataset(
        _frame(200),
        k=2,
        holdout_share=0.2,
        holdout_days=None,
        tuning_share=0.15,
        original=original,
    )
    # 68 questions each in the window's training part; c# (300, original only) is not chosen
    assert data.classes == ["pandas", "python"]
    assert len(data.holdout) == 40 and data.n_original == 300
    assert len(data.train) == 300 + 136
    with pytest.raises(DatasetError, match="too few"):
        build_dataset(_frame(20), k=2, holdout_share=0.2, holdout_days=None, tuning_share=0.15)
