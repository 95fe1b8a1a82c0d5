"""Feedback sanity: before fitting, is the window's feedback what honest users write? (pure)

Feedback is written by clients. Poisoned feedback (one tag on many questions) trains a model
that also wins on the poisoned hold-out slice, so the gate alone cannot see it. Three checks
compare the window's labels with the champion's reference (its card's label profile: the tags
it was trained on and how often users' tags agreed with its confident predictions):

- ``tag_share``: the largest rise of one tag's share of questions over its reference share;
- ``entropy``: the window's label entropy as a ratio of the reference's (same tag categories);
- ``agreement``: the drop in how often the tags agree with the champion's confident best tag.

Calibrated on the real 2019–2020 questions against the 2008–2011 champion (README, "Trusting
the loop"): honest feedback rises python by 0.09-0.10, keeps 0.92-0.99 of the entropy and drops
agreement by 0.02-0.05; 20 % constant-tag feedback rises its tag by 0.24-0.25; 80 % by 0.77,
with entropy ratio 0.44-0.48 and an agreement drop of 0.57.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tagger.labels import LabelProfile, tag_entropy, tag_shares

CHECKS = ("tag_share", "entropy", "agreement")


@dataclass(frozen=True)
class SanityRules:
    """Each threshold is a setting; ``None`` turns that check off."""

    max_tag_share_rise: float | None = 0.15
    min_entropy_ratio: float | None = 0.7
    max_agreement_drop: float | None = 0.2
    min_confident_rows: int = 50

    @classmethod
    def from_settings(cls, s: Any) -> SanityRules:
        return cls(
            max_tag_share_rise=s.feedback_max_tag_share_rise,
            min_entropy_ratio=s.feedback_min_entropy_ratio,
            max_agreement_drop=s.feedback_max_agreement_drop,
            min_confident_rows=s.feedback_min_confident_rows,
        )


@dataclass(frozen=True)
class FeedbackCheck:
    """One check: its value against its threshold, and what is behind it (tag, source)."""

    check: str
    value: float
    threshold: float
    failed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "value": round(self.value, 4),
            "threshold": self.threshold,
            "failed": self.failed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SanityReport:
    checks: list[FeedbackCheck]

    @property
    def failed(self) -> list[FeedbackCheck]:
        return [c for c in self.checks if c.failed]

    @property
    def suspicious(self) -> bool:
        return bool(self.failed)

    def reason(self) -> str:
        return "suspicious feedback: " + "; ".join(c.detail for c in self.failed)

    def summary(self) -> str:
        return ", ".join(f"{c.check} {c.value:.3f} (threshold {c.threshold})" for c in self.checks)


def _top_source(window: pd.DataFrame, tag: str) -> str:
    """ ", 412 of them from source X": which credential sent most of ``tag`` (if recorded)."""
    if "source" not in window.columns:
        return ""
    with_tag = window.loc[[tag in tags for tags in window["tags"]], "source"].fillna("unknown")
    if with_tag.empty:
        return ""
    counts = with_tag.astype(str).value_counts()
    return f", {int(counts.iloc[0])} of them from source {counts.index[0]!r}"


def _tag_share(window: pd.DataFrame, ref: LabelProfile, limit: float) -> FeedbackCheck:
    shares, n = tag_shares(window["tags"])
    if not shares:
        return FeedbackCheck("tag_share", 0.0, limit, False, "no tags in the window")
    tag = max(shares, key=lambda t: (shares[t] - ref.shares.get(t, 0.0), t))
    rise = shares[tag] - ref.shares.get(tag, 0.0)
    detail = (
        f"tag {tag!r} is on {shares[tag]:.1%} of the window's {n} questions vs "
        f"{ref.shares.get(tag, 0.0):.1%} of the champion's training labels (rise {rise:+.3f}, "
        f"allowed {limit:+.3f}){_top_source(window, tag)}"
    )
    return FeedbackCheck("tag_share", rise, limit, rise > limit, detail)


def _entropy(window: pd.DataFrame, ref: LabelProfile, limit: float) -> FeedbackCheck:
    h = tag_entropy(window["tags"])
    ratio = h / ref.entropy if ref.entropy > 0 else 1.0
    shares, _ = tag_shares(window["tags"])
    top = max(shares, key=lambda t: (shares[t], t)) if shares else "(none)"
    detail = (
        f"label entropy {h:.2f} bits vs {ref.entropy:.2f} in the champion's training labels "
        f"(ratio {ratio:.2f}, minimum {limit:.2f}; most common tag {top!r})"
    )
    return FeedbackCheck("entropy", ratio, limit, ratio < limit, detail)


def _agreement(
    agreement: tuple[float | None, int], ref: LabelProfile, limit: float, min_rows: int
) -> FeedbackCheck | None:
    share, rows = agreement
    if share is None or ref.agreement is None or rows < min_rows:
        return None
    drop = ref.agreement - share
    detail = (
        f"users' tags agree with the champion's confident best tag on {share:.1%} of {rows} "
        f"questions vs {ref.agreement:.1%} on its validation questions (drop {drop:.3f}, "
        f"allowed {limit:.3f})"
    )
    return FeedbackCheck("agreement", drop, limit, drop > limit, detail)


def check_feedback(
    window: pd.DataFrame,
    reference: LabelProfile,
    agreement: tuple[float | None, int],
    rules: SanityRules,
) -> SanityReport:
    """The enabled checks of ``window`` (column ``tags``, optional ``source``) against
    ``reference``; ``agreement`` is (share, rows) of the champion's confident predictions on
    the window (``tagger.labels.confident_agreement``)."""
    checks: list[FeedbackCheck] = []
    if rules.max_tag_share_rise is not None:
        checks.append(_tag_share(window, reference, rules.max_tag_share_rise))
    if rules.min_entropy_ratio is not None:
        checks.append(_entropy(window, reference, rules.min_entropy_ratio))
    if rules.max_agreement_drop is not None:
        found = _agreement(agreement, reference, rules.max_agreement_drop, rules.min_confident_rows)
        if found is not None:
            checks.append(found)
    return SanityReport(checks)
