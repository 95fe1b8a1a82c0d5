"""The champion/challenger gate and the data-vs-concept drift verdict (pure functions).

Both models are scored on the same held-out slice; the challenger replaces the champion only
when every enabled rule holds. A failed rule keeps the champion, and the reason says which.

The slice is feedback, which clients write, and a few hundred questions: its mean is noisy and
can be bent. So the gain must hold beyond noise (the lower bound of a paired bootstrap interval
is above the margin), and the challenger must not collapse on a trusted anchor no client can
write: the canary set of real questions with their true tags that the champion's artefact keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROMOTED = "promoted"
REJECTED = "rejected"


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

    @classmethod
    def from_settings(cls, s: Any) -> GateRules:
        return cls(
            min_jaccard_gain=s.gate_min_jaccard_gain if s.gate_require_jaccard_gain else None,
            max_coverage_drop=s.gate_max_coverage_drop if s.gate_require_coverage else None,
            min_holdout_rows=s.gate_min_holdout_rows if s.gate_require_min_rows else None,
            canary_min_ratio=s.gate_canary_min_ratio if s.gate_require_canary else None,
            confidence=s.gate_confidence,
            resamples=s.gate_bootstrap_resamples,
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
) -> GateDecision:
    """Promote only when the challenger beats the champion by the margin (the interval's lower
    bound when ``gain`` is given), coverage does not fall, the slice is large enough and the
    challenger holds on the trusted canary set. ``champion`` None: nothing served yet."""
    failed: list[str] = []
    reasons: list[str] = []
    if rules.min_holdout_rows is not None and rows < rules.min_holdout_rows:
        failed.append("min_rows")
        reasons.append(f"hold-out has {rows} questions, fewer than {rules.min_holdout_rows}")
    if champion is not None:
        _gain_rule(champion, challenger, rules, gain, failed, reasons)
        _anchor_rule(rules, anchor, failed, reasons)
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
        f"on {rows} questions{anchor_text}",
    )


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
