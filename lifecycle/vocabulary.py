"""What a retrain changes in the tag vocabulary, in words (pure functions).

A retrain fits the K most frequent feedback tags of its window: the tags users moved to come in,
the tags nobody uses any more go out. The gate's reason names both, so an engineer sees what the
challenger learnt ("added reactjs, flutter, pandas …") without opening MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence


def vocabulary_change(
    champion: Sequence[str] | None, challenger: Sequence[str], n: int = 10
) -> tuple[list[str], list[str]]:
    """(added, dropped) tags, in the challenger's and the champion's own order (their most
    frequent first)."""
    if champion is None:
        return list(challenger), []
    old, new = set(champion), set(challenger)
    return [t for t in challenger if t not in old][:n], [t for t in champion if t not in new][:n]


def describe_change(champion: Sequence[str] | None, challenger: Sequence[str], n: int = 10) -> str:
    """``"vocabulary: added reactjs, flutter (+3 more); dropped wcf"`` or that nothing moved."""
    if champion is None:
        return f"vocabulary: {len(challenger)} tags"
    added, dropped = vocabulary_change(champion, challenger, n=len(challenger))

    def listed(tags: list[str]) -> str:
        more = f" (+{len(tags) - n} more)" if len(tags) > n else ""
        return ", ".join(tags[:n]) + more

    if not added and not dropped:
        return "vocabulary: the same tags"
    parts = [
        f"added {listed(added)}" if added else "",
        f"dropped {listed(dropped)}" if dropped else "",
    ]
    return "vocabulary: " + "; ".join(p for p in parts if p)
