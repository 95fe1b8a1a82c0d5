"""What a model's labels looked like: the reference that new feedback is compared with.

A model card keeps the label profile of the questions the model was trained on (which tags,
how often, how spread out) and how often users' tags agreed with the model's confident
predictions on its own validation questions. A retrain compares the feedback window with it
before fitting anything (``lifecycle.sanity``): one tag taking a large share, a collapsed label
entropy or a sharp drop in agreement is what poisoned feedback looks like.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from tagger.metrics import normalize_tags
from tagger.model import TagModel

PROFILE_TAGS = 100  # tags whose share a profile keeps
CONFIDENT_SCORE = 0.5  # a prediction whose best tag scores this much is "confident"


def tag_shares(tag_lists: Iterable[Iterable[str]]) -> tuple[dict[str, float], int]:
    """Share of questions that carry each tag, and the number of questions."""
    counts: Counter[str] = Counter()
    n = 0
    for tags in tag_lists:
        n += 1
        counts.update(normalize_tags(tags))
    return ({t: c / n for t, c in counts.items()} if n else {}), n


def tag_entropy(tag_lists: Iterable[Iterable[str]]) -> float:
    """Shannon entropy (bits) of the tag occurrences.

    It grows a little with the sample (more rare tags): on real 2019 questions a 500-question
    window keeps 0.88 of the 2008–2011 training labels' entropy, 5,700 questions 0.99; one tag
    on 80 % of the questions leaves 0.40-0.48 (README, "Trusting the loop").
    """
    counts: Counter[str] = Counter()
    for tags in tag_lists:
        counts.update(normalize_tags(tags))
    total = sum(counts.values())
    if not total:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def confident_agreement(
    model: TagModel, df: pd.DataFrame, min_score: float = CONFIDENT_SCORE
) -> tuple[float | None, int]:
    """Share of confidently predicted questions whose best tag is among the given tags.

    (share, confident questions); share None when no prediction was confident.
    """
    agree = n = 0
    for title, body, tags in zip(df["title"], df["body"], df["tags"], strict=True):
        analysis = model.analyse(title, body)
        if analysis.tags and analysis.scores[analysis.tags[0]] >= min_score:
            n += 1
            agree += analysis.tags[0] in normalize_tags(tags)
    return (agree / n if n else None), n


@dataclass(frozen=True)
class LabelProfile:
    """Labels of a model's training data and its agreement on its validation questions."""

    questions: int
    shares: dict[str, float]  # the PROFILE_TAGS most common tags -> share of questions
    entropy: float  # bits, of all the training labels
    agreement: float | None = None
    agreement_rows: int = 0
    confident_score: float = CONFIDENT_SCORE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelProfile:
        return cls(
            questions=int(d["questions"]),
            shares={str(k): float(v) for k, v in d["shares"].items()},
            entropy=float(d["entropy"]),
            agreement=None if d.get("agreement") is None else float(d["agreement"]),
            agreement_rows=int(d.get("agreement_rows", 0)),
            confident_score=float(d.get("confident_score", CONFIDENT_SCORE)),
        )


def label_profile(
    train: pd.DataFrame, model: TagModel | None = None, validation: pd.DataFrame | None = None
) -> LabelProfile:
    """The profile of ``train``'s tags (+ the model's confident agreement on ``validation``)."""
    shares, n = tag_shares(train["tags"])
    top = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:PROFILE_TAGS]
    kept = {t: round(s, 6) for t, s in top}
    agreement, rows = (None, 0)
    if model is not None and validation is not None and len(validation):
        agreement, rows = confident_agreement(model, validation)
    return LabelProfile(
        questions=n,
        shares=kept,
        entropy=round(tag_entropy(train["tags"]), 6),
        agreement=None if agreement is None else round(agreement, 6),
        agreement_rows=rows,
    )
