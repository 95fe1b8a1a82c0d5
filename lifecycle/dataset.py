"""The retraining data set: labelled questions from the store, split by time (pure functions).

The store keeps each served question with the tags its user gave as feedback; those are the
labels of the questions the current model is failing on. The most recent slice is held out so
champion and challenger are scored on exactly the same, latest questions; the slice before it
tunes the challenger's decision rule (tuning on the gate's slice would flatter the challenger).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tagger.metrics import normalize_tags
from tagger.train import top_k_tags

COLUMNS = ("created_at", "title", "body", "tags")


class DatasetError(ValueError):
    """Not enough labelled questions to train or to judge; the message says how many.

    Raised before anything is fitted: the retrain ends as "skipped" (not enough data), not as a
    failure, and no model is trained only to be rejected.
    """


@dataclass(frozen=True)
class RetrainData:
    """Train / tuning / hold-out frames, all with columns title, body, tags, created_at."""

    train: pd.DataFrame
    tuning: pd.DataFrame
    holdout: pd.DataFrame
    classes: list[str]
    n_labelled: int
    n_original: int
    window: pd.DataFrame  # every labelled question of the window (what the sanity checks read)

    def summary(self) -> dict[str, int]:
        return {
            "labelled": self.n_labelled,
            "original": self.n_original,
            "train": len(self.train),
            "tuning": len(self.tuning),
            "holdout": len(self.holdout),
        }


def labelled_questions(labelled: pd.DataFrame) -> pd.DataFrame:
    """Store rows (``store.labelled``) as training rows: feedback tags normalised, empty dropped
    (the feedback's ``source`` is kept when the store records it)."""
    df = labelled.loc[:, [c for c in (*COLUMNS, "source") if c in labelled.columns]].copy()
    df["title"] = df["title"].fillna("").astype(str)
    df["body"] = df["body"].fillna("").astype(str)
    df["tags"] = [sorted(normalize_tags(t)) for t in df["tags"]]
    df = df.loc[(df["tags"].str.len() > 0) & (df["title"].str.strip() != "")]
    return df.sort_values("created_at", kind="stable").reset_index(drop=True)


def split_recent(
    df: pd.DataFrame, share: float, days: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(before, most recent slice): the last ``days`` of the frame, or its last ``share`` rows."""
    if df.empty:
        return df, df
    if days is not None:
        start = df["created_at"].max() - pd.Timedelta(days=days)
        recent = df["created_at"] > start
        return df.loc[~recent], df.loc[recent]
    n = max(1, round(len(df) * share))
    return df.iloc[:-n], df.iloc[-n:]


def learnable_tags(tag_lists: pd.Series, candidates: list[str]) -> list[str]:
    """The candidates that some but not all questions carry (a one-vs-rest classifier needs
    positive and negative examples of each tag); order kept."""
    n = len(tag_lists)
    counts = {t: 0 for t in candidates}
    for tags in tag_lists:
        for t in tags:
            if t in counts:
                counts[t] += 1
    return [t for t in candidates if 0 < counts[t] < n]


def build_dataset(
    labelled: pd.DataFrame,
    *,
    k: int,
    holdout_share: float,
    holdout_days: float | None,
    tuning_share: float,
    original: pd.DataFrame | None = None,
    min_train: int = 50,
    min_holdout: int | None = None,
) -> RetrainData:
    """Hold out the latest slice, tune on the slice before it, train on the rest (+ original).

    The vocabulary is the K most frequent feedback tags of the window's training part, even when
    the original data is added: new tags are what the old model lacks. A tag that every
    training question carries (or none) cannot be learnt and is left out; fewer than 2
    learnable tags, or a hold-out under ``min_holdout`` (the gate's minimum), is not enough data.
    """
    window = labelled_questions(labelled)
    rest, holdout = split_recent(window, holdout_share, holdout_days)
    train, tuning = split_recent(rest, tuning_share)
    if len(train) < min_train or tuning.empty or holdout.empty:
        raise DatasetError(
            f"{len(window)} labelled questions: too few to train, tune and hold out "
            f"(train {len(train)}, tuning {len(tuning)}, hold-out {len(holdout)})"
        )
    if min_holdout is not None and len(holdout) < min_holdout:
        raise DatasetError(
            f"{len(window)} labelled questions: the hold-out slice has {len(holdout)}, fewer "
            f"than the gate's minimum of {min_holdout} (the gate would reject any challenger)"
        )
    n_original = 0
    if original is not None and not original.empty:
        extra = original.loc[:, list(COLUMNS)]
        n_original = len(extra)
        train = pd.concat([extra, train.loc[:, list(COLUMNS)]], ignore_index=True)
    candidates = top_k_tags(train["tags"].iloc[n_original:].tolist(), k)
    classes = learnable_tags(train["tags"], candidates)
    if len(classes) < 2:
        raise DatasetError(
            f"{len(window)} labelled questions: {len(classes)} tag(s) with both positive and "
            f"negative training examples (of {len(candidates)}: "
            f"{', '.join(candidates[:5]) or 'none'}); at least 2 are needed to learn anything"
        )
    return RetrainData(
        train=train.reset_index(drop=True),
        tuning=tuning.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        classes=classes,
        n_labelled=len(window),
        n_original=n_original,
        window=window,
    )
