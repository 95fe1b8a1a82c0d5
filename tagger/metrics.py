"""Quality metrics for tag suggestions: Jaccard score and tag coverage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def normalize_tags(tags: Iterable[str]) -> set[str]:
    """Tags compare case-insensitively and without surrounding blanks, as StackOverflow does."""
    return {t.strip().lower() for t in tags if t and t.strip()}


def jaccard(predicted: Iterable[str], true: Iterable[str]) -> float:
    """|pred ∩ true| / |pred ∪ true|; two empty sets agree perfectly (1.0)."""
    p, t = normalize_tags(predicted), normalize_tags(true)
    union = p | t
    if not union:
        return 1.0
    return len(p & t) / len(union)


def coverage(predicted: Iterable[str], true: Iterable[str]) -> float:
    """Share of the user's tags that were predicted: |pred ∩ true| / |true|.

    An empty truth has nothing to cover and no meaning here, so it is refused.
    """
    p, t = normalize_tags(predicted), normalize_tags(true)
    if not t:
        raise ValueError("coverage needs at least one true tag")
    return len(p & t) / len(t)


def mean_scores(
    predicted: Sequence[Iterable[str]], true: Sequence[Iterable[str]]
) -> dict[str, float]:
    """Mean Jaccard and coverage over the questions that have at least one true tag."""
    if len(predicted) != len(true):
        raise ValueError("predicted and true must have the same length")
    pairs = [(p, t) for p, t in zip(predicted, true, strict=True) if normalize_tags(t)]
    if not pairs:
        return {"jaccard": float("nan"), "coverage": float("nan"), "n": 0}
    j = sum(jaccard(p, t) for p, t in pairs) / len(pairs)
    c = sum(coverage(p, t) for p, t in pairs) / len(pairs)
    return {"jaccard": j, "coverage": c, "n": len(pairs)}
