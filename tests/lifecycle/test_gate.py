"""The gate's rules, the drift verdict and the data set split (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lifecycle.dataset import DatasetError, build_dataset, labelled_questions, split_recent
from lifecycle.gate import (
    AnchorCheck,
    GateRules,
    TagComparison,
    compare_tags,
    comparison_frame,
    decide,
    drift_verdict,
    losing_tags,
    paired_bootstrap,
    recovery_share,
)
from lifecycle.settings import LifecycleSettings
from tagger.tagquality import TagCounts

CHAMP = {"jaccard": 0.12, "coverage": 0.13}


# measured on the real canary set (500 questions of late 2011) by the calibration in the README:
# the 2011 champion, a challenger trained on honest 2019-2020 feedback, one on 80 % "javascript"
HOLDS = AnchorCheck(champion=0.1846, challenger=0.0894, reference=0.1846, rows=500, min_ratio=0.3)
COLLAPSES = AnchorCheck(
    champion=0.1846, challenger=0.0224, reference=0.1846, rows=500, min_ratio=0.3
)


def test_promotes_only_when_every_rule_holds() -> None:
    rules = GateRules(min_jaccard_gain=0.01, max_coverage_drop=0.0, min_holdout_rows=200)
    ok = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.21}, 1000, rules, anchor=HOLDS)
    assert ok.promote and ok.failed == []
    assert "canary Jaccard 0.1846 -> 0.0894 on 500 trusted questions" in ok.reason
    small_gain = decide(CHAMP, {"jaccard": 0.125, "coverage": 0.21}, 1000, rules, anchor=HOLDS)
    assert not small_gain.promote and small_gain.failed == ["jaccard_gain"]
    assert "margin 0.0100" in small_gain.reason
    cov = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.12}, 1000, rules, anchor=HOLDS)
    assert cov.failed == ["coverage"] and "coverage 0.1200 vs champion 0.1300" in cov.reason
    few = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.21}, 150, rules, anchor=HOLDS)
    assert few.failed == ["min_rows"] and "150 questions" in few.reason
    collapse = decide(CHAMP, {"jaccard": 0.80, "coverage": 0.81}, 1000, rules, anchor=COLLAPSES)
    assert collapse.failed == ["canary"] and "collapses on the trusted set" in collapse.reason
    assert "floor 0.0554 = 0.30 x 0.1846" in collapse.reason
    # a champion without a canary set: nothing trusted, no automatic promotion
    blind = decide(CHAMP, {"jaccard": 0.20, "coverage": 0.21}, 1000, rules)
    assert blind.failed == ["canary"] and "no canary set" in blind.reason


def test_each_rule_has_an_off_switch() -> None:
    settings = LifecycleSettings(
        gate_require_jaccard_gain=False,
        gate_require_coverage=False,
        gate_require_min_rows=False,
        gate_require_canary=False,
        gate_tag_check=False,
    )
    rules = GateRules.from_settings(settings)
    assert rules == GateRules(None, None, None, None, tag_max_f1_drop=None)
    assert decide(CHAMP, {"jaccard": 0.10, "coverage": 0.01}, 3, rules).promote
    on = GateRules.from_settings(LifecycleSettings(gate_min_jaccard_gain=0.05))
    assert on.min_jaccard_gain == 0.05 and on.min_holdout_rows == 200
    assert on.canary_min_ratio == 0.3 and on.confidence == 0.95 and on.resamples == 2000


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
    # measured on the poisoned slice the challenger "recovers 100 %"; the trusted set says no
    poisoned = drift_verdict(recovery_share(0.19, 0.09, 0.82), 0.5, COLLAPSES)
    assert poisoned.startswith("no drift verdict: the challenger collapses on the trusted set")
    assert "100%" not in poisoned
    honest = drift_verdict(recovery_share(0.19, 0.12, 0.20), 0.5, HOLDS)
    assert honest.startswith("data drift: retraining recovered 100%") and "canary" in honest


def test_paired_bootstrap_separates_gain_from_noise() -> None:
    rng = np.random.default_rng(7)
    champion = rng.choice([0.0, 0.2, 0.25, 0.33, 0.5, 1.0], size=300)
    # no real difference: each question's score moves at random either way
    noise = np.clip(champion + rng.normal(0, 0.15, 300), 0, 1)
    flat = paired_bootstrap(noise, champion)
    assert flat.low < flat.point < flat.high and flat.low < 0.01
    assert paired_bootstrap(noise, champion) == flat  # seeded: the same slice, the same answer
    rules = GateRules()
    scores = {"jaccard": 0.3, "coverage": 0.3}
    rejected = decide(scores, scores, 300, rules, gain=flat, anchor=HOLDS)
    assert rejected.failed == ["jaccard_gain"]
    assert "95% interval [" in rejected.reason and "over 300 paired questions" in rejected.reason
    assert "lower bound not above the margin 0.0100" in rejected.reason
    better = paired_bootstrap(np.clip(champion + 0.08, 0, 1), champion)
    assert better.low > 0.05
    promoted = decide(scores, scores, 300, rules, gain=better, anchor=HOLDS)
    assert promoted.promote and "95% interval" in promoted.reason
    # more questions, a narrower interval; a wider confidence, a wider interval
    wide = paired_bootstrap(noise[:75], champion[:75])
    assert wide.high - wide.low > flat.high - flat.low
    c99 = paired_bootstrap(noise, champion, confidence=0.99)
    assert c99.low < flat.low and c99.high > flat.high
    empty = paired_bootstrap(np.array([]), np.array([]))
    assert empty.rows == 0 and math.isnan(empty.low)


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


def test_degenerate_data_is_not_enough_data_before_any_fit() -> None:
    single = _frame(400).assign(tags=[["python"]] * 400)
    with pytest.raises(DatasetError, match=r"0 tag\(s\) with both positive and negative"):
        build_dataset(single, k=10, holdout_share=0.2, holdout_days=None, tuning_share=0.15)
    # 600 labelled questions: a hold-out of 120, under the gate's minimum of 200
    with pytest.raises(DatasetError, match="hold-out slice has 120, fewer than the gate's minimum"):
        build_dataset(
            _frame(600), k=2, holdout_share=0.2, holdout_days=None, tuning_share=0.15,
            min_holdout=200,
        )  # fmt: skip
    # a tag every training question carries is left out of the vocabulary, not a crash
    mixed = _frame(200).assign(tags=[["common", "rust" if i % 2 else "go"] for i in range(200)])
    data = build_dataset(mixed, k=3, holdout_share=0.2, holdout_days=None, tuning_share=0.15)
    assert data.classes == ["go", "rust"]


# --- the per-tag check (issue 17): a pooled gain must not hide a big tag that collapses


def _tag(
    name: str, support: int, before: tuple[int, int, int], after: tuple[int, int, int]
) -> TagComparison:
    return TagComparison(name, support, TagCounts(name, *before), TagCounts(name, *after))


def test_compare_tags_counts_both_models_on_the_same_questions() -> None:
    given = [["javascript", "html"], ["javascript"], ["python"], ["css"]]
    champion = [["javascript"], ["javascript"], ["python"], ["javascript"]]
    challenger = [["html"], [], ["python", "html"], ["css"]]  # never javascript
    rows = compare_tags(given, champion, challenger, ["javascript", "python", "html", "css"])
    by_tag = {r.tag: r for r in rows}
    js = by_tag["javascript"]
    # given or predicted by either model: questions 1, 2 and 4 (4: the champion's false positive)
    assert js.support == 3 and (js.champion.tp, js.champion.fp, js.champion.fn) == (2, 1, 0)
    assert js.challenger.f1 == 0.0 and js.drop == pytest.approx(0.8)
    assert by_tag["html"].support == 2 and by_tag["html"].drop < 0  # the challenger gains
    assert rows[0].tag == "javascript"  # worst drop first
    assert js.text() == "javascript F1 0.80 -> 0.00 on 3 questions"
    frame = comparison_frame(rows)
    assert list(frame.columns) == [
        "tag", "support", "champion_f1", "champion_precision", "champion_recall",
        "challenger_f1", "challenger_precision", "challenger_recall", "drop",
    ]  # fmt: skip
    assert frame.iloc[0].to_dict()["champion_precision"] == pytest.approx(0.6667)
    # a user's own tags outside both vocabularies are never counted
    assert "rust" not in {r.tag for r in compare_tags([["rust"]], [[]], [[]], ["python"])}


def test_a_tag_losing_more_than_the_allowed_f1_rejects_and_is_named() -> None:
    rules = GateRules(tag_max_f1_drop=0.2, tag_min_support=50)
    # 0.62 -> 0.41 on 180 questions; the pooled Jaccard gains well beyond noise
    javascript = _tag("javascript", 180, (80, 50, 48), (45, 60, 70))
    small = _tag("haskell", 49, (20, 5, 5), (0, 0, 25))  # F1 0.80 -> 0.00, under the support
    fine = _tag("python", 400, (150, 40, 40), (140, 50, 45))  # 0.79 -> 0.75
    better = {"jaccard": 0.20, "coverage": 0.21}
    d = decide(CHAMP, better, 1000, rules, anchor=HOLDS, tags=[small, fine, javascript])
    assert not d.promote and d.failed == ["tag_f1"]
    assert d.reason.startswith("javascript F1 0.62 -> 0.41 on 180 questions"), d.reason
    assert "F1 drop above 0.20 on a tag with at least 50 questions" in d.reason
    assert "haskell" not in d.reason and "python" not in d.reason
    # a promotion says how close the worst judged tag came
    ok = decide(CHAMP, better, 1000, rules, anchor=HOLDS, tags=[small, fine])
    assert ok.promote and "worst tag python F1 0.79 -> 0.75 on 400 questions" in ok.reason
    # the drop must be above the limit: exactly the limit passes
    edge = _tag("java", 100, (50, 0, 0), (40, 0, 20))  # 1.00 -> 0.80
    assert losing_tags([edge], rules) == [] and losing_tags([edge], GateRules(tag_max_f1_drop=0.19))
    # several: the worst three, then how many more
    many = [_tag(f"t{i}", 60 + i, (30, 0, 0), (30 - 3 * i, 0, 3 * i)) for i in range(3, 9)]
    d = decide(CHAMP, better, 1000, rules, anchor=HOLDS, tags=many)  # t3 loses 0.18: passes
    assert d.reason.startswith("t8 F1 1.00 -> 0.33 on 68 questions, t7 F1 1.00 -> 0.46 on 67")
    assert "t5" not in d.reason and " and 2 more (" in d.reason  # t5 and t4 lose too


def test_the_per_tag_check_has_an_off_switch_and_settings() -> None:
    javascript = _tag("javascript", 180, (80, 50, 48), (0, 0, 128))
    better = {"jaccard": 0.20, "coverage": 0.21}
    on = GateRules.from_settings(LifecycleSettings())
    assert (on.tag_max_f1_drop, on.tag_min_support) == (0.2, 50)
    assert decide(CHAMP, better, 1000, on, anchor=HOLDS, tags=[javascript]).failed == ["tag_f1"]
    off = GateRules.from_settings(LifecycleSettings(gate_tag_check=False))
    assert off.tag_max_f1_drop is None
    assert decide(CHAMP, better, 1000, off, anchor=HOLDS, tags=[javascript]).promote
    tuned = GateRules.from_settings(
        LifecycleSettings(gate_tag_min_support=200, gate_tag_max_f1_drop=0.5)
    )
    assert decide(CHAMP, better, 1000, tuned, anchor=HOLDS, tags=[javascript]).promote
