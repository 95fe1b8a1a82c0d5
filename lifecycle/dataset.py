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
    """Not enough labelled questions to train or to judge; the message says how many."""


@dataclass(frozen=True)
class RetrainData:
    """Train / tuning / hold-out frames, all with columns title, body, tags, created_at."""

    train: pd.DataFrame
    tuning: pd.DataFrame
    holdout: pd.DataFrame
    classes: list[str]
    n_labelled: int
    n_original: int

    def summary(self) -> dict[str, int]:
        return {
            "labelled": self.n_labelled,
            "original": self.n_original,
            "train": len(self.train),
            "tuning": len(self.tuning),
            "holdout": len(self.holdout),
        }


def labelled_questions(labelled: pd.DataFrame) -> pd.DataFrame:
    """Store rows (``store.labelled``) as training rows: feedback tags normalised, empty dropped."""
    df = labelled.loc[:, list(COLUMNS)].copy()
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


def build_dataset(
    labelled: pd.DataFrame,
    *,
    k: int,
    holdout_share: float,
    holdout_days: float | None,
    tuning_share: float,
    original: pd.DataFrame | None = None,
    min_train: int = 50,
) -> RetrainData:
    """Hold out the latest slice, tune on the slice before it, train on the rest (+ original).

    The vocabulary is the K most frequent feedback tags of the window's training part, even when
    the original data is added: new tags are what the old model lacks.
    """
    window = labelled_questions(labelled)
    rest, holdout = split_recent(window, holdout_share, holdout_days)
    train, tuning = split_recent(rest, tuning_share)
    if len(train) < min_train or tuning.empty or holdout.empty:
        raise DatasetError(
            f"{len(window)} labelled questions: too few to train, tune and hold out "
            f"(train {len(train)}, tuning {len(tuning)}, hold-out {len(holdout)})"
        )
    classes = top_k_tags(train["tags"].tolist(), k)
    n_original = 0
    if original is not None and not original.empty:
        extra = original.loc[:, list(COLUMNS)]
        n_original = len(extra)
        train = pd.concat([extra, train], ignore_index=True)
    return RetrainData(
        train=train.reset_index(drop=True),
        tuning=tuning.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        classes=classes,
        n_labelled=len(window),
        n_original=n_original,
    )
