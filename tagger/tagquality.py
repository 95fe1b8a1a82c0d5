"""Per-tag quality: true/false positives and false negatives of each vocabulary tag.

One meaning everywhere (the predictor's counters, the store's SQL, the drift report, the gate
and the model artefact's baseline table): for one tag over questions with feedback (predicted
tags P, the user's tags G), tp = in P and in G, fp = in P not in G, fn = in G not in P;
support = tp + fp + fn, the questions where the tag was given or predicted. Only tags of the
served vocabulary count: a user's other tag is never a label (bounded metrics, no
unseen-tag noise).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from tagger.data import questions_of
from tagger.metrics import normalize_tags

if TYPE_CHECKING:
    from tagger.model import TagModel

OUTCOMES = ("tp", "fp", "fn")
PER_TAG_FILE = "per_tag_metrics.csv"  # in every model artefact folder (tagger.artefact)
PER_TAG_COLUMNS = ("tag", "support", "tp", "fp", "fn", "precision", "recall", "f1")


def outcomes(
    predicted: Iterable[str], given: Iterable[str], vocabulary: Container[str]
) -> list[tuple[str, str]]:
    """(tag, outcome) pairs of one feedback, vocabulary tags only, sorted by tag."""
    p, g = normalize_tags(predicted), normalize_tags(given)
    pairs = [(t, "tp" if t in g else "fp") for t in p if t in vocabulary]
    pairs += [(t, "fn") for t in g - p if t in vocabulary]
    return sorted(pairs)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass(frozen=True)
class TagCounts:
    """One tag's counts over a set of questions with feedback; ratios are 0.0 when undefined."""

    tag: str
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def support(self) -> int:
        return self.tp + self.fp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def count_tags(
    pairs: Iterable[tuple[Sequence[str], Sequence[str]]], vocabulary: Iterable[str]
) -> dict[str, TagCounts]:
    """(predicted, given) per question -> the counts of every vocabulary tag (zeros included,
    so a tag nobody predicted or gave is still listed)."""
    vocab = list(dict.fromkeys(vocabulary))
    counts = {t: {o: 0 for o in OUTCOMES} for t in vocab}
    known = set(vocab)
    for predicted, given in pairs:
        for tag, outcome in outcomes(predicted, given, known):
            counts[tag][outcome] += 1
    return {t: TagCounts(tag=t, **c) for t, c in counts.items()}


@dataclass(frozen=True)
class TagQualityRules:
    """When a tag's live F1 is judged against its baseline (the TagQualityLow alert's numbers):
    enough support to be more than noise, a baseline good enough for a drop to mean
    something, and the shares of the baseline below which it is yellow or red."""

    min_support: int = 40
    yellow_share: float = 0.75
    red_share: float = 0.5
    min_baseline_f1: float = 0.3


def tag_status(counts: TagCounts, baseline_f1: float | None, rules: TagQualityRules) -> str:
    """ "red", "yellow" or "green"; too little support or no usable baseline is "green" (not
    judged: a handful of questions or a tag the model never did well on says nothing)."""
    if baseline_f1 is None or counts.support < rules.min_support:
        return "green"
    if baseline_f1 < rules.min_baseline_f1:
        return "green"
    if counts.f1 < rules.red_share * baseline_f1:
        return "red"
    if counts.f1 < rules.yellow_share * baseline_f1:
        return "yellow"
    return "green"


def counts_table(counts: Iterable[TagCounts]) -> pd.DataFrame:
    """The per-tag table (columns :data:`PER_TAG_COLUMNS`, ratios rounded to 4 digits)."""
    rows = [
        {
            "tag": c.tag,
            "support": c.support,
            "tp": c.tp,
            "fp": c.fp,
            "fn": c.fn,
            "precision": round(c.precision, 4),
            "recall": round(c.recall, 4),
            "f1": round(c.f1, 4),
        }
        for c in counts
    ]
    return pd.DataFrame(rows, columns=list(PER_TAG_COLUMNS))


def baseline_table(model: TagModel, df: pd.DataFrame) -> pd.DataFrame:
    """Each model tag's counts and precision, recall and F1 of the served predictions on a
    labelled frame (title, body, tags): the baseline live feedback is compared with."""
    predicted = [model.analyse(t, b).tags for t, b in questions_of(df)]
    classes = [str(c) for c in model.classes]
    counts = count_tags(zip(predicted, df["tags"], strict=True), classes)
    return counts_table(counts.values())
