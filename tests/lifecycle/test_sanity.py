"""Feedback sanity checks: pure rules, then their calibration on the real 2019 questions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.sanity import SanityRules, check_feedback
from lifecycle.settings import LifecycleSettings
from tagger.artefact import load_artefact, load_canary
from tagger.data import load_questions
from tagger.labels import LabelProfile, confident_agreement, tag_entropy
from tagger.settings import TagwatchSettings

REFERENCE = LabelProfile(
    questions=1000,
    shares={"python": 0.1, "javascript": 0.1, "java": 0.1, "c#": 0.1, "go": 0.1},
    entropy=tag_entropy([[t] for t in ("python", "javascript", "java", "c#", "go") * 20]),
    agreement=0.8,
    agreement_rows=500,
)


def _window(tags: list[list[str]], sources: list[str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"tags": tags})
    if sources is not None:
        df["source"] = sources
    return df


def test_honest_window_passes_and_a_constant_tag_is_named_with_its_source() -> None:
    rules = SanityRules()
    honest = _window([[t] for t in ("python", "javascript", "java", "c#", "go") * 40])
    report = check_feedback(honest, REFERENCE, (0.78, 300), rules)
    assert not report.suspicious and [c.check for c in report.checks] == [
        "tag_share",
        "entropy",
        "agreement",
    ]
    poisoned = _window(
        [["javascript"]] * 160 + [["python"], ["go"]] * 20,
        sources=["feedback-token"] * 150 + ["unknown"] * 50,
    )
    report = check_feedback(poisoned, REFERENCE, (0.3, 300), rules)
    failed = {c.check: c for c in report.failed}
    assert set(failed) == {"tag_share", "entropy", "agreement"}
    assert failed["tag_share"].value == pytest.approx(0.7)
    reason = report.reason()
    assert reason.startswith("suspicious feedback: tag 'javascript' is on 80.0% of the window")
    assert "150 of them from source 'feedback-token'" in reason
    assert "agree with the champion's confident best tag on 30.0% of 300" in reason


def test_each_check_has_an_off_switch_and_agreement_needs_enough_rows() -> None:
    poisoned = _window([["javascript"]] * 200)
    off = SanityRules(max_tag_share_rise=None, min_entropy_ratio=None, max_agreement_drop=None)
    assert check_feedback(poisoned, REFERENCE, (0.0, 300), off).checks == []
    few = check_feedback(poisoned, REFERENCE, (0.0, 10), SanityRules())
    assert "agreement" not in [c.check for c in few.checks]  # 10 confident rows: no verdict
    settings = LifecycleSettings(feedback_max_tag_share_rise=None, feedback_min_entropy_ratio=0.5)
    rules = SanityRules.from_settings(settings)
    assert rules.max_tag_share_rise is None and rules.min_entropy_ratio == 0.5


def poisoned(questions: pd.DataFrame, share: float, tag: str = "javascript") -> pd.DataFrame:
    """``share`` of the questions (at random, seeded) get ``[tag]`` as their feedback."""
    hit = np.random.default_rng(15).random(len(questions)) < share
    tags = [[tag] if h else list(t) for h, t in zip(hit, questions["tags"], strict=True)]
    return questions.assign(tags=tags)


@pytest.mark.slow
def test_calibration_on_real_questions(
    models_dir: Path, tagwatch_settings: TagwatchSettings
) -> None:
    """Honest 2019 feedback passes, 20 % and 80 % constant-tag feedback trip, at two sizes."""
    artefact = load_artefact(models_dir, "test")
    reference = LabelProfile.from_dict(artefact.card["labels"])
    canary = load_canary(models_dir / "test")
    assert canary is not None and len(canary) == 500  # pinned at training time
    df = load_questions(tagwatch_settings.titles_path)
    y2019 = df.loc[df["created_at"].dt.year == 2019]
    rules = SanityRules.from_settings(LifecycleSettings())
    lines = []
    for n, every in ((500, 9), (1500, 3)):
        base = y2019.iloc[::every].head(n)
        for share in (0.0, 0.2, 0.8):
            window = poisoned(base, share)
            agreement = confident_agreement(artefact.model, window)
            report = check_feedback(window, reference, agreement, rules)
            lines.append(f"{n} questions, {share:.0%} poison: {report.summary()}")
            assert report.suspicious == (share > 0), lines[-1]
            if share > 0:
                assert "tag 'javascript'" in report.reason()
            if share == 0.8:
                assert {c.check for c in report.failed} == {"tag_share", "entropy", "agreement"}
    print("\nfeedback sanity on real 2019 questions vs the 2008-2011 champion:")
    print("\n".join(lines))
