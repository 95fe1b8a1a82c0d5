"""Acceptance, on real data: the gate's per-tag check refuses a challenger that loses one big tag
even though it wins on the pooled Jaccard (issue 17, section 4).

The honest setup: the 2008–2011 champion; feedback on 2019 – Feb 2020 questions (the
acceptance test's, every other one) where the questions tagged ``javascript`` only arrive in
the last hours (a client that started sending them recently). The challenger is trained on the
window before them, so it never learns ``javascript``; the hold-out (the last half day) has it.
The challenger gains overall (recent vocabulary), loses ``javascript`` entirely.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest

from lifecycle.gate import AnchorCheck, GainInterval, GateRules, decide
from lifecycle.retrain import COMPARISON_FILE, retrain
from lifecycle.settings import LifecycleSettings
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import RetrainEnv, fill_store
from tests.lifecycle.test_policy import honest_recent

pytestmark = pytest.mark.slow

TAG = "javascript"
HOLDOUT_ROWS = 1146  # the acceptance test's hold-out: the latest 20 % of its 5,731 questions


def fill_without_tag_until_the_hold_out(rt: RetrainEnv, settings: TagwatchSettings) -> int:
    """Questions before the hold-out without TAG, 10 s apart from 3 days ago; the hold-out
    (all of its questions) 10 s apart from 1 day ago. Returns TAG's questions in the hold-out."""
    questions = honest_recent(settings)
    before, holdout = questions.iloc[:-HOLDOUT_ROWS], questions.iloc[-HOLDOUT_ROWS:]
    before = before.loc[~before["tags"].map(lambda tags: TAG in tags)]
    model = rt.settings.models_dir / "test"
    now = time.time()
    fill_store(rt.settings.store_url, model, before, now - 3 * 86400, seconds_apart=10.0)
    fill_store(rt.settings.store_url, model, holdout, now - 86400, seconds_apart=10.0)
    return int(holdout["tags"].map(lambda tags: TAG in tags).sum())


def test_a_challenger_losing_a_big_tag_is_rejected_despite_a_pooled_gain(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    from mlflow import MlflowClient

    rt = champion_2011
    given = fill_without_tag_until_the_hold_out(rt, tagwatch_settings)
    settings = rt.settings.model_copy(update={"holdout_days": 0.5})
    out = retrain(settings, source="test per-tag gate")
    assert out.champion is not None and out.challenger is not None and out.gain, out.line()
    assert out.challenger["rows"] == HOLDOUT_ROWS
    (worst,) = [r for r in out.tag_comparison if r.tag == TAG]
    champion, challenger = out.champion["jaccard"], out.challenger["jaccard"]
    print(
        f"\nper-tag gate: hold-out {HOLDOUT_ROWS} questions ({given} tagged {TAG}); pooled "
        f"Jaccard champion {champion:.4f} -> challenger {challenger:.4f} (gain {out.gain}); "
        f"{worst.text()} (precision {worst.champion.precision:.2f} -> "
        f"{worst.challenger.precision:.2f}, recall {worst.champion.recall:.2f} -> "
        f"{worst.challenger.recall:.2f}); next worst judged: "
        + ", ".join(
            f"{t['tag']} F1 {t['champion_f1']:.2f} -> {t['challenger_f1']:.2f}"
            for t in out.tags[1:4]
        )
        + f"\n{out.line()}"
    )
    # the pooled figures say promote; the tag says no, and the reason names it with its numbers
    assert challenger >= champion and out.gain["low"] > settings.gate_min_jaccard_gain
    assert out.outcome == "rejected", out.line()
    assert out.reason.startswith(f"{TAG} F1 {worst.champion.f1:.2f} -> 0.00 on "), out.reason
    assert out.tags[0]["tag"] == TAG and out.tags[0]["drop"] == round(worst.drop, 4)
    assert worst.support >= given >= settings.gate_tag_min_support
    assert worst.drop > settings.gate_tag_max_f1_drop
    from lifecycle.registry import Registry

    assert Registry(rt.settings).champion().version == 1  # type: ignore[union-attr]

    # the run keeps the whole comparison, worst first
    assert out.run_id is not None
    csv = MlflowClient().download_artifacts(out.run_id, COMPARISON_FILE, str(rt.root))
    table = pd.read_csv(csv)
    row = table.loc[table["tag"] == TAG].iloc[0]
    assert row["challenger_f1"] == 0.0 and row["support"] == worst.support
    assert len(table) == len(out.tag_comparison) and (table["drop"].diff().dropna() <= 0).all()
    assert set(table.columns) >= {"support", "champion_precision", "challenger_recall"}

    # the same challenger, the same figures, with the per-tag check switched off: every other
    # rule passes (the gain beyond noise, coverage, the slice's size, the trusted canary set)
    off = GateRules.from_settings(LifecycleSettings(gate_tag_check=False))
    assert out.anchor is not None
    a, g = out.anchor, out.gain
    anchor = AnchorCheck(a["champion"], a["challenger"], a["reference"], int(a["rows"]),
                         a["min_ratio"])  # fmt: skip
    gain = GainInterval(g["point"], g["low"], g["high"], g["confidence"], int(g["rows"]))
    passed = decide(out.champion, out.challenger, HOLDOUT_ROWS, off, gain, anchor,
                    out.tag_comparison)  # fmt: skip
    print(f"per-tag check off: {passed.decision}: {passed.reason}")
    assert passed.promote, passed.reason
