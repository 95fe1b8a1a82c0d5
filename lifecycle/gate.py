"""The champion/challenger gate and the data-vs-concept drift verdict (pure functions).

Both models are scored on the same held-out slice; the challenger replaces the champion only
when every enabled rule holds. A failed rule keeps the champion, and the reason says which.

The slice is feedback, which clients write, and a few hundred questions: its mean is noisy and
can be bent. So the gain must hold beyond noise (the lower bound of a paired bootstrap interval
is above the margin), and the challenger must not collapse on a trusted anchor no client can
write: the canary set of real questions with their true tags that the champion's artefact keeps.
A pooled gain can also hide one big tag that collapses: no tag with enough support on the slice
may lose more than a set amount of F1 (the per-tag check).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tagger.metrics import normalize_tags
from tagger.tagquality import TagCounts, count_tags

PROMOTED = "promoted"
REJECTED = "rejected"
WORST_TAGS = 3  # a rejection names at most this many tags (the worst)


@dataclass(frozen=True)
class GateRules:
    """Each rule is a setting; ``None`` turns it off."""

    min_jaccard_gain: float | None = 0.01
    max_coverage_drop: float | None = 0.0
    min_holdout_rows: int | None = 200
    # the challenger's canary Jaccard must reach this share of the anchor's reference
    canary_min_ratio: float | None = 0.3
    confidence: float = 0.95
    resamples: int = 2000
    # per-tag check: no tag with at least tag_min_support questions on the slice loses more
    # than tag_max_f1_drop F1 (None: off)
    tag_max_f1_drop: float | None = 0.2
    tag_min_support: int = 50

    @classmethod
    def from_settings(cls, s: Any) -> GateRules:
        return cls(
            min_jaccard_gain=s.gate_min_jaccard_gain if s.gate_require_jaccard_gain else None,
            max_coverage_drop=s.gate_max_coverage_drop if s.gate_require_coverage else None,
            min_holdout_rows=s.gate_min_holdout_rows if s.gate_require_min_rows else None,
            canary_min_ratio=s.gate_canary_min_ratio if s.gate_require_canary else None,
            confidence=s.gate_confidence,
            resamples=s.gate_bootstrap_resamples,
            tag_max_f1_drop=s.gate_tag_max_f1_drop if s.gate_tag_check else None,
            tag_min_support=s.gate_tag_min_support,
        )


@dataclass(frozen=True)
class GainInterval:
    """The challenger's mean Jaccard gain over the champion, with a bootstrap interval."""

    point: float
    low: float
    high: float
    confidence: float
    rows: int

    def text(self) -> str:
        return (
            f"gain {self.point:+.4f}, {self.confidence:.0%} interval [{self.low:+.4f}, "
            f"{self.high:+.4f}] over {self.rows} paired questions"
        )

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in vars(self).items()}


def paired_bootstrap(
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    block: int = 250,
) -> GainInterval:
    """Percentile interval of the mean per-question gain, resampling questions (both models
    scored on the same questions: pairing removes the questions' own difficulty from the noise).

    Seeded, so the same slice always gives the same decision; vectorised in blocks of
    ``block`` resamples to bound memory (block x rows indices).
    """
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return GainInterval(math.nan, math.nan, math.nan, confidence, 0)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            diff[rng.integers(0, n, size=(min(block, resamples - i), n))].mean(axis=1)
            for i in range(0, resamples, block)
        ]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return GainInterval(float(diff.mean()), float(low), float(high), confidence, n)


@dataclass(frozen=True)
class AnchorCheck:
    """Champion and challenger on the trusted canary set.

    ``reference`` is the Jaccard of the model that pinned the set (kept in the card), so a
    chain of retrains cannot lower the bar step by step; the floor is ``min_ratio`` of the
    larger of it and the champion's own score.
    """

    champion: float
    challenger: float
    reference: float
    rows: int
    min_ratio: float

    @property
    def floor(self) -> float:
        return self.min_ratio * max(self.champion, self.reference)

    @property
    def passed(self) -> bool:
        return self.challenger >= self.floor

    def text(self) -> str:
        return (
            f"canary Jaccard {self.champion:.4f} -> {self.challenger:.4f} on {self.rows} trusted "
            f"questions (floor {self.floor:.4f} = {self.min_ratio:.2f} x "
            f"{max(self.champion, self.reference):.4f})"
        )

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(float(v), 4) for k, v in vars(self).items()}, "floor": self.floor}


@dataclass(frozen=True)
class TagComparison:
    """One tag, both models, the same slice (``tagger.tagquality`` counts).

    ``support``: questions of the slice where the tag was given or predicted by either model,
    so a tag the challenger stops predicting (or starts spraying) keeps its weight.
    """

    tag: str
    support: int
    champion: TagCounts
    challenger: TagCounts

    @property
    def drop(self) -> float:
        return self.champion.f1 - self.challenger.f1

    def text(self) -> str:
        return (
            f"{self.tag} F1 {self.champion.f1:.2f} -> {self.challenger.f1:.2f} "
            f"on {self.support} questions"
        )

    def row(self) -> dict[str, Any]:
        """One line of ``per_tag_comparison.csv`` (the retrain's MLflow artefact)."""
        row: dict[str, Any] = {"tag": self.tag, "support": self.support}
        for who, c in (("champion", self.champion), ("challenger", self.challenger)):
            row[f"{who}_f1"] = round(c.f1, 4)
            row[f"{who}_precision"] = round(c.precision, 4)
            row[f"{who}_recall"] = round(c.recall, 4)
        row["drop"] = round(self.drop, 4)
        return row


COMPARISON_COLUMNS = (
    ["tag", "support"]
    + [f"{who}_{k}" for who in ("champion", "challenger") for k in ("f1", "precision", "recall")]
    + ["drop"]
)


def compare_tags(
    given: Sequence[Sequence[str]],
    champion: Sequence[Sequence[str]],
    challenger: Sequence[Sequence[str]],
    vocabulary: Iterable[str],
) -> list[TagComparison]:
    """Per-tag F1 of both models on the same questions, worst drop first.

    ``vocabulary``: both models' tags; a tag one model lacks counts as never predicted by it
    (a challenger that dropped a big tag loses all of its F1 there).
    """
    tags = sorted(set(vocabulary))
    before = count_tags(zip(champion, given, strict=True), tags)
    after = count_tags(zip(challenger, given, strict=True), tags)
    known = set(tags)
    support: Counter[str] = Counter()
    for g, c, n in zip(given, champion, challenger, strict=True):
        support.update(known & (normalize_tags(g) | normalize_tags(c) | normalize_tags(n)))
    rows = [TagComparison(t, support[t], before[t], after[t]) for t in tags]
    return sorted(rows, key=lambda r: (-r.drop, -r.support, r.tag))


def comparison_frame(rows: Sequence[TagComparison]) -> pd.DataFrame:
    """The comparison as a table, worst drop first (``per_tag_comparison.csv``)."""
    return pd.DataFrame([r.row() for r in rows], columns=COMPARISON_COLUMNS)


def judged_tags(rows: Sequence[TagComparison], rules: GateRules) -> list[TagComparison]:
    """Tags with at least ``tag_min_support`` questions, worst drop first: the ones the check
    judges (a tag on a handful of questions moves by chance)."""
    judged = [r for r in rows if r.support >= rules.tag_min_support]
    return sorted(judged, key=lambda r: (-r.drop, -r.support, r.tag))


def losing_tags(rows: Sequence[TagComparison], rules: GateRules) -> list[TagComparison]:
    """Judged tags that lose more than the allowed F1, worst first (none when the check is
    off)."""
    limit = rules.tag_max_f1_drop
    return [] if limit is None else [r for r in judged_tags(rows, rules) if r.drop > limit]


@dataclass(frozen=True)
class GateDecision:
    decision: str  # "promoted" | "rejected"
    reason: str
    failed: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTED


def decide(
    champion: dict[str, float] | None,
    challenger: dict[str, float],
    rows: int,
    rules: GateRules,
    gain: GainInterval | None = None,
    anchor: AnchorCheck | None = None,
    tags: Sequence[TagComparison] | None = None,
) -> GateDecision:
    """Promote only when the challenger beats the champion by the margin (the interval's lower
    bound when ``gain`` is given), coverage does not fall, the slice is large enough, the
    challenger holds on the trusted canary set and no tag with enough support loses too much
    F1 (``tags``: :func:`compare_tags`; None: not checked). ``champion`` None: nothing served
    yet."""
    failed: list[str] = []
    reasons: list[str] = []
    if rules.min_holdout_rows is not None and rows < rules.min_holdout_rows:
        failed.append("min_rows")
        reasons.append(f"hold-out has {rows} questions, fewer than {rules.min_holdout_rows}")
    if champion is not None:
        _gain_rule(champion, challenger, rules, gain, failed, reasons)
        _anchor_rule(rules, anchor, failed, reasons)
        _tag_rule(rules, tags or [], failed, reasons)
        drop = champion["coverage"] - challenger["coverage"]
        if rules.max_coverage_drop is not None and drop > rules.max_coverage_drop:
            failed.append("coverage")
            reasons.append(
                f"coverage {challenger['coverage']:.4f} vs champion {champion['coverage']:.4f} "
                f"(drop {drop:.4f}, allowed {rules.max_coverage_drop:.4f})"
            )
    if failed:
        return GateDecision(REJECTED, "; ".join(reasons), failed)
    if champion is None:
        return GateDecision(PROMOTED, "no champion yet")
    gain_text = (
        gain.text() if gain is not None else f"{challenger['jaccard'] - champion['jaccard']:+.4f}"
    )
    anchor_text = f"; {anchor.text()}" if anchor is not None else ""
    return GateDecision(
        PROMOTED,
        f"Jaccard {challenger['jaccard']:.4f} vs champion {champion['jaccard']:.4f} "
        f"({gain_text}), coverage {challenger['coverage']:.4f} vs {champion['coverage']:.4f} "
        f"on {rows} questions{anchor_text}{_worst_tag_text(rules, tags)}",
    )


def _tag_rule(
    rules: GateRules, tags: Sequence[TagComparison], failed: list[str], reasons: list[str]
) -> None:
    """A pooled gain must not hide a big tag that collapses: name the worst few."""
    lost = losing_tags(tags, rules)
    if not lost:
        return
    failed.append("tag_f1")
    more = f" and {len(lost) - WORST_TAGS} more" if len(lost) > WORST_TAGS else ""
    reasons.append(
        ", ".join(r.text() for r in lost[:WORST_TAGS])
        + f"{more} (F1 drop above {rules.tag_max_f1_drop:.2f} on a tag with at least "
        f"{rules.tag_min_support} questions)"
    )


def _worst_tag_text(rules: GateRules, tags: Sequence[TagComparison] | None) -> str:
    """A promotion names the worst tag that was judged, so its margin is visible."""
    if rules.tag_max_f1_drop is None or not tags:
        return ""
    judged = judged_tags(tags, rules)
    if not judged:
        return f"; no tag with {rules.tag_min_support} questions to compare"
    return f"; worst tag {judged[0].text()} (allowed drop {rules.tag_max_f1_drop:.2f})"


def _gain_rule(
    champion: dict[str, float],
    challenger: dict[str, float],
    rules: GateRules,
    gain: GainInterval | None,
    failed: list[str],
    reasons: list[str],
) -> None:
    """The gain must hold beyond noise: the interval's lower bound (else the point) >= margin."""
    if rules.min_jaccard_gain is None:
        return
    scores = f"Jaccard {challenger['jaccard']:.4f} vs champion {champion['jaccard']:.4f}"
    if gain is None:
        point = challenger["jaccard"] - champion["jaccard"]
        if point < rules.min_jaccard_gain:
            failed.append("jaccard_gain")
            reasons.append(f"{scores} (gain {point:+.4f}, margin {rules.min_jaccard_gain:.4f})")
    elif not gain.low > rules.min_jaccard_gain:
        failed.append("jaccard_gain")
        reasons.append(
            f"{scores} ({gain.text()}: lower bound not above the margin "
            f"{rules.min_jaccard_gain:.4f})"
        )


def _anchor_rule(
    rules: GateRules, anchor: AnchorCheck | None, failed: list[str], reasons: list[str]
) -> None:
    """The challenger must not collapse on the champion's trusted canary set."""
    if rules.canary_min_ratio is None:
        return
    if anchor is None:
        failed.append("canary")
        reasons.append(
            "the champion's artefact has no canary set (canary.csv): nothing trusted to check "
            "the challenger against (promote by hand after checking it)"
        )
    elif not anchor.passed:
        failed.append("canary")
        reasons.append(f"collapses on the trusted set: {anchor.text()}")


def recovery_share(
    champion_validation: float, champion_live: float, challenger_live: float, min_gap: float = 0.01
) -> float | None:
    """Share of the validation→live Jaccard gap that retraining won back, clipped to [0, 1].

    None when the champion did not lose (gap below ``min_gap``): there is nothing to recover
    and no drift verdict to give.
    """
    gap = champion_validation - champion_live
    if not math.isfinite(gap) or gap < min_gap:
        return None
    return min(1.0, max(0.0, (challenger_live - champion_live) / gap))


def drift_verdict(
    share: float | None, min_recovery: float, anchor: AnchorCheck | None = None
) -> str:
    """One line: what the recovery share says about the drift.

    The share is measured on the feedback slice; a challenger that collapses on the trusted
    canary set gets no verdict at all, so a poisoned slice cannot report "recovered 100 %".
    """
    if anchor is not None and not anchor.passed:
        return (
            f"no drift verdict: the challenger collapses on the trusted set ({anchor.text()}), "
            "so its scores on the feedback slice are not evidence"
        )
    if share is None:
        return "no quality gap to recover: the champion scores its validation level on recent data"
    trusted = f" ({anchor.text()})" if anchor is not None else ""
    if share >= min_recovery:
        return f"data drift: retraining recovered {share:.0%} of the Jaccard gap{trusted}"
    return (
        f"concept drift suspected: retraining is not enough (recovered {share:.0%} of the "
        f"Jaccard gap){trusted}"
    )
