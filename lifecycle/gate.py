"""The champion/challenger gate and the data-vs-concept drift verdict (pure functions).

Both models are scored on the same held-out slice; the challenger replaces the champion only
when every enabled rule holds. A failed rule keeps the champion, and the reason says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PROMOTED = "promoted"
REJECTED = "rejected"


@dataclass(frozen=True)
class GateRules:
    """Each rule is a setting; ``None`` turns it off."""

    min_jaccard_gain: float | None = 0.01
    max_coverage_drop: float | None = 0.0
    min_holdout_rows: int | None = 200

    @classmethod
    def from_settings(cls, s: Any) -> GateRules:
        return cls(
            min_jaccard_gain=s.gate_min_jaccard_gain if s.gate_require_jaccard_gain else None,
            max_coverage_drop=s.gate_max_coverage_drop if s.gate_require_coverage else None,
            min_holdout_rows=s.gate_min_holdout_rows if s.gate_require_min_rows else None,
        )


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
) -> GateDecision:
    """Promote only when the challenger beats the champion by the margin, coverage does not
    fall and the slice is large enough. ``champion`` None: nothing served yet, promote."""
    failed: list[str] = []
    reasons: list[str] = []
    if rules.min_holdout_rows is not None and rows < rules.min_holdout_rows:
        failed.append("min_rows")
        reasons.append(f"hold-out has {rows} questions, fewer than {rules.min_holdout_rows}")
    if champion is not None:
        gain = challenger["jaccard"] - champion["jaccard"]
        if rules.min_jaccard_gain is not None and gain < rules.min_jaccard_gain:
            failed.append("jaccard_gain")
            reasons.append(
                f"Jaccard {challenger['jaccard']:.4f} vs champion {champion['jaccard']:.4f} "
                f"(gain {gain:+.4f}, margin {rules.min_jaccard_gain:.4f})"
            )
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
    return GateDecision(
        PROMOTED,
        f"Jaccard {challenger['jaccard']:.4f} vs champion {champion['jaccard']:.4f} "
        f"({challenger['jaccard'] - champion['jaccard']:+.4f}), coverage "
        f"{challenger['coverage']:.4f} vs {champion['coverage']:.4f} on {rows} questions",
    )


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


def drift_verdict(share: float | None, min_recovery: float) -> str:
    """One line: what the recovery share says about the drift."""
    if share is None:
        return "no quality gap to recover: the champion scores its validation level on recent data"
    if share >= min_recovery:
        return f"data drift: retraining recovered {share:.0%} of the Jaccard gap"
    return (
        f"concept drift suspected: retraining is not enough (recovered {share:.0%} of the "
        "Jaccard gap)"
    )
