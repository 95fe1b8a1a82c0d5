"""Replays of real questions through the real store, for the drift job tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from drift.job import RunResult, run_once
from drift.metrics import DriftMetrics
from drift.settings import DriftSettings
from store import FeedbackRecord, PredictionRecord, SQLiteStore
from tagger.artefact import load_artefact
from tagger.data import load_questions
from tagger.metrics import coverage, jaccard
from tagger.model import TagModel
from tagger.settings import TagwatchSettings
from tagger.train import Split, TrainConfig, split_by_time

# a Monday; replayed days follow it (any fixed date works: the job only sees created_at)
DAY0 = pd.Timestamp("2026-03-02", tz="UTC")


@pytest.fixture(scope="session")
def split(tagwatch_settings: TagwatchSettings) -> Split:
    """The same split the session model was trained with (default TrainConfig)."""
    cfg = TrainConfig(data_path=tagwatch_settings.titles_path, output_dir=Path("unused"))
    df = load_questions(tagwatch_settings.titles_path)
    return split_by_time(df, cfg.cutoff, cfg.validation_share, cfg.max_train_rows)


@pytest.fixture(scope="session")
def model(models_dir: Path) -> TagModel:
    return load_artefact(models_dir).model


def replay(
    store: SQLiteStore,
    model: TagModel,
    questions: pd.DataFrame,
    per_bin: int,
    start: pd.Timestamp = DAY0,
    feedback_every: int = 0,
    prefix: str = "q",
) -> int:
    """Serve ``questions`` in order, ``per_bin`` a day from ``start``; returns rows written.

    With ``feedback_every`` = k, every k-th question also gets its real tags as feedback.
    """
    records, feedback = [], []
    vocab = set(model.classes.tolist())
    step = 86_400 / per_bin
    for i, (title, body, tags) in enumerate(
        zip(questions["title"], questions["body"], questions["tags"], strict=True)
    ):
        created = start.timestamp() + (i // per_bin) * 86_400 + (i % per_bin) * step
        a = model.analyse(title, body)
        rid = f"{prefix}{i}"
        records.append(
            PredictionRecord(
                id=rid,
                created_at=created,
                title=title,
                body=body,
                tags=a.tags,
                scores=a.scores,
                inference_seconds=0.001,
                model_version="test",
                features=a.features,
            )
        )
        if feedback_every and i % feedback_every == 0:
            feedback.append(
                FeedbackRecord(
                    prediction_id=rid,
                    tags=list(tags),
                    coverage=coverage(a.tags, tags),
                    jaccard=jaccard(a.tags, tags),
                    n_unknown_tags=sum(1 for t in tags if t not in vocab),
                    created_at=created + 60,
                )
            )
    store.save_predictions(records)
    for f in feedback:
        store.save_feedback(f)
    return len(records)


@pytest.fixture
def drift_settings(tmp_path: Path, models_dir: Path) -> DriftSettings:
    return DriftSettings(
        models_dir=models_dir,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        reports_dir=tmp_path / "reports",
        state_dir=tmp_path / "state",
    )


@pytest.fixture
def store(drift_settings: DriftSettings) -> Iterator[SQLiteStore]:
    s = SQLiteStore(Path(drift_settings.store_url.removeprefix("sqlite:///")))
    yield s
    s.close()


def run_job(settings: DriftSettings, now: pd.Timestamp) -> tuple[RunResult, CollectorRegistry]:
    """One run of the real job with fresh metrics; the registry holds what the run exported."""
    registry = CollectorRegistry()
    return run_once(settings, DriftMetrics(registry), now=now), registry


def drift_env(settings: DriftSettings, **extra: str) -> dict[str, str]:
    """The environment of ``python -m drift`` configured as ``settings``."""
    return {
        **os.environ,
        "TAGWATCH_MODELS_DIR": str(settings.models_dir),
        "TAGWATCH_STORE_URL": settings.store_url,
        "TAGWATCH_REPORTS_DIR": str(settings.reports_dir),
        "TAGWATCH_STATE_DIR": str(settings.state_dir),
        **extra,
    }


@dataclass
class DriftCase:
    """A drift job on a fresh store: real questions replayed into it, then real runs."""

    settings: DriftSettings
    store: SQLiteStore
    split: Split
    day0: pd.Timestamp
    model: TagModel

    def replay(
        self, questions: pd.DataFrame, per_bin: int, into: SQLiteStore | None = None, **kw: Any
    ) -> int:
        """:func:`replay` with the session model, into the case's store unless ``into``."""
        return replay(self.store if into is None else into, self.model, questions, per_bin, **kw)

    def later(self, year: int) -> pd.DataFrame:
        """The questions of ``year`` from the period after the training data."""
        later = self.split.later
        return later.loc[later["created_at"].dt.year == year]

    def run(self, now: pd.Timestamp, **update: Any) -> tuple[RunResult, CollectorRegistry]:
        """:func:`run_job` with the case's settings, ``update`` applied to a copy of them."""
        return run_job(self.settings.model_copy(update=update), now)


@pytest.fixture
def case(
    drift_settings: DriftSettings, store: SQLiteStore, split: Split, model: TagModel
) -> DriftCase:
    return DriftCase(drift_settings, store, split, DAY0, model)
