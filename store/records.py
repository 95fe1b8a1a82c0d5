"""What a store keeps: served predictions, their feedback, and the interface every store has.

The predictor writes through :class:`PredictionStore`; the drift job, the weekly report and the
lifecycle read through it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd


def new_prediction_id() -> str:
    """32 hex characters: nanoseconds since the epoch, then 64 random bits.

    Unique like a UUID, but ordered by time: the id index grows at its end instead of
    touching a random B-tree page per insert (measured 10 µs vs 30 µs a row on a table of
    200,000 predictions).
    """
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


class StoreError(RuntimeError):
    """The store cannot be used (unwritable path, corrupt file)."""


class RowRejected(StoreError):
    """The database refused these rows themselves (bad text, a constraint), not a store fault:
    retrying them cannot succeed, so they are isolated and set aside instead of blocking others."""


@dataclass(slots=True)
class PredictionRecord:
    """One served question, as stored (not frozen: a frozen init costs µs on the hot path)."""

    id: str
    created_at: float
    title: str
    body: str
    tags: list[str]
    scores: dict[str, float]
    inference_seconds: float
    model_version: str
    features: dict[str, Any]
    url: str | None = None


@dataclass(frozen=True)
class FeedbackRecord:
    prediction_id: str
    tags: list[str]
    coverage: float
    jaccard: float
    n_unknown_tags: int
    created_at: float = field(default_factory=time.time)


class PredictionStore(Protocol):
    """What the predictor, the drift job and the weekly report need from a store."""

    def save_prediction(self, record: PredictionRecord) -> None: ...

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None: ...

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None: ...

    def get_feedback(self, prediction_id: str) -> FeedbackRecord | None: ...

    def save_feedback(self, feedback: FeedbackRecord) -> bool: ...

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame: ...

    def problematic(self, since: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]: ...

    def labelled(self, since: float, until: float) -> pd.DataFrame: ...

    def count(self) -> int: ...

    def check_writable(self) -> None: ...

    def close(self) -> None: ...
