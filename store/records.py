"""What a store keeps: served predictions, their feedback, and the interface every store has.

The predictor writes through :class:`PredictionStore`; the drift job, the weekly report and the
lifecycle read through it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import pandas as pd

from tagger.tagquality import TagCounts

# a prediction id: 16 hex digits of nanoseconds since the epoch, 16 random, and (when the
# stack has an id secret) 16 more: a truncated HMAC-SHA256 of the first 32 under that secret
_ID = re.compile(r"[0-9a-f]{32}(?:[0-9a-f]{16})?")
ID_TAG_CHARS = 16  # 64 bits: forging one id takes ~2^63 guesses, each one a rate-limited request


def new_prediction_id(id_secret: bytes | None = None) -> str:
    """32 hex characters: nanoseconds since the epoch, then 64 random bits; with ``id_secret``
    16 more, an HMAC tag that lets any replica sharing the secret verify the id without a
    store lookup (:func:`id_signed_by`).

    Unique like a UUID, but ordered by time: the id index grows at its end instead of
    touching a random B-tree page per insert (measured 10 µs vs 30 µs a row on a table of
    200,000 predictions).
    """
    base = f"{time.time_ns():016x}{os.urandom(8).hex()}"
    return base if id_secret is None else base + _id_tag(id_secret, base)


def _id_tag(id_secret: bytes, base: str) -> str:
    mac = hmac.new(id_secret, b"tagwatch-prediction-id\n" + base.encode(), hashlib.sha256)
    return mac.hexdigest()[:ID_TAG_CHARS]


def id_signed_by(prediction_id: str, id_secret: bytes) -> bool:
    """True when ``prediction_id`` was minted by :func:`new_prediction_id` with this secret:
    feedback for any other id is refused without reading the store."""
    if len(prediction_id) != 32 + ID_TAG_CHARS or _ID.fullmatch(prediction_id) is None:
        return False
    return hmac.compare_digest(_id_tag(id_secret, prediction_id[:32]), prediction_id[32:])


def is_unsigned_id(prediction_id: str) -> bool:
    """An id minted without a secret (32 hex digits): one served before the secret was set."""
    return len(prediction_id) == 32 and _ID.fullmatch(prediction_id) is not None


def minted_at(prediction_id: str) -> float | None:
    """When :func:`new_prediction_id` minted ``prediction_id`` (epoch seconds); None for any
    other string. A missing id minted seconds ago may still be in flight, not unknown."""
    if _ID.fullmatch(prediction_id) is None:
        return None
    return int(prediction_id[:16], 16) / 1e9


# score(predicted_tags, feedback_tags) -> (coverage, jaccard)
Scorer = Callable[[Sequence[str], Sequence[str]], tuple[float, float]]
# retention deletes in batches this size, one short transaction each, with a pause between
# them so that the predictor's writes never wait behind it
PRUNE_BATCH_ROWS = 1000
PRUNE_PAUSE_SECONDS = 0.02


@dataclass(frozen=True)
class BatchPolicy:
    """How a write-behind writer batches a store's rows: a store declares its own
    (``batch_policy``), since what a transaction costs is the store's business."""

    max_rows: int  # a batch this full is written at once
    max_delay_seconds: float  # a row waits at most this long (plus a writer tick)
    # True: the request that fills a batch may write it itself (a local commit, ~µs); False:
    # only the writer thread writes (a remote commit waits for a round trip and the server)
    on_request_thread: bool


# SQLite: a commit costs ~40 µs, a row in a batch of 64 ~9 µs, and a row reaches the file
# within ~0.1 s (feedback sent sooner to another worker finds it in the spool: WriteBehindStore)
LOCAL_BATCHES = BatchPolicy(max_rows=64, max_delay_seconds=0.05, on_request_thread=True)


def texts_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``texts`` query with their JSON tags parsed and NULL text as ""."""
    df["title"] = df["title"].fillna("").astype(str)
    df["url"] = df["url"].fillna("").astype(str)
    df["feedback_tags"] = [json.loads(t) if t else None for t in df["feedback_tags"]]
    return df


def dumps(value: Any) -> bytes:
    """Compact JSON, ~10x faster than ``json.dumps`` (the predictor's hot path encodes every row).

    Text orjson refuses (a lone surrogate, which /predict rejects but a replayed spool may hold)
    falls back to ``json.dumps``, ASCII-escaped: encoding a row never fails.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value, separators=(",", ":")).encode("ascii")


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


# the feedback's provenance (exporter/app.py): "token" = sent with the feedback token, "open" =
# accepted without one (TAGWATCH_FEEDBACK_AUTH=open), "unknown" = stored before it was recorded
FEEDBACK_SOURCES = ("token", "open", "unknown")


@dataclass(frozen=True)
class FeedbackRecord:
    prediction_id: str
    tags: list[str]
    coverage: float
    jaccard: float
    n_unknown_tags: int
    created_at: float = field(default_factory=time.time)
    # which credential sent it (FEEDBACK_SOURCES); "unknown": stored before sources were kept
    source: str = "unknown"


@dataclass(frozen=True)
class ResolvedFeedback(FeedbackRecord):
    """Pending feedback stored once its prediction arrived, with the tags that prediction had:
    the predictor counts it per tag (tp/fp/fn) like direct feedback. Not a stored column."""

    predicted: list[str] = field(default_factory=list)


class PredictionStore(Protocol):
    """What the predictor, the drift job and the weekly report need from a store."""

    def save_prediction(self, record: PredictionRecord) -> None: ...

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None: ...

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None: ...

    def get_feedback(self, prediction_id: str) -> FeedbackRecord | None: ...

    def save_feedback(self, feedback: FeedbackRecord) -> bool: ...

    def save_pending_feedback(
        self,
        prediction_id: str,
        tags: Sequence[str],
        n_unknown_tags: int,
        received_at: float,
        source: str = "unknown",
    ) -> str:
        """Keep feedback for a prediction not visible yet (another replica's queue or spool):
        "queued", "duplicate" (the same tags are already pending) or "conflict" (other tags).
        ``source`` goes with it into the feedback table once it is resolved."""
        ...

    def resolve_pending_feedback(
        self, score: Scorer, expire_before: float, limit: int = 500
    ) -> tuple[list[ResolvedFeedback], int]:
        """Score and store the pending feedback whose prediction has arrived; drop pending
        received before ``expire_before`` that still has none. (stored feedback, dropped)."""
        ...

    def prune(
        self, text_before: float, rows_before: float, batch: int = PRUNE_BATCH_ROWS
    ) -> tuple[int, int]:
        """Blank title/body/url of rows served before ``text_before``; delete rows (and their
        feedback) served before ``rows_before``. Small batches, one short transaction each,
        :data:`PRUNE_PAUSE_SECONDS` apart. (rows blanked, rows deleted)."""
        ...

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame: ...

    def problematic(self, since: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]: ...

    def labelled(self, since: float, until: float) -> pd.DataFrame: ...

    def count_labelled(self, since: float, until: float) -> int:
        """How many rows :meth:`labelled` would return, in one COUNT query (the lifecycle's
        "enough new feedback?" check runs it on every webhook)."""
        ...

    def texts(self, start: float, end: float, limit: int) -> pd.DataFrame:
        """At most ``limit`` questions served in [start, end), spread evenly over the period
        (every n-th by ``seq``): ``title``, ``url``, ``model_version`` and ``feedback_tags``
        (list[str], or None without feedback). What the drift job's text judgement reads; a
        title past ``TAGWATCH_RETENTION_DAYS`` is blank."""
        ...

    def tag_counts(
        self, since: float, until: float, vocabulary: Sequence[str]
    ) -> dict[str, TagCounts]:
        """tp, fp and fn of every ``vocabulary`` tag over the questions served in [since,
        until) with feedback, counted in SQL (store/tagcounts.py): the same numbers as
        :func:`tagger.tagquality.count_tags` on :meth:`labelled`'s rows (zeros included)."""
        ...

    def tag_examples(
        self, tag: str, since: float, until: float, limit: int = 3
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` questions served in [since, until) with feedback where ``tag``
        was wrongly predicted ("fp") or missed ("fn"): ``title``, ``url``, ``predicted``,
        ``given`` (lists), ``outcome``, ``created_at``; newest first. What an alert on one tag
        shows as its examples."""
        ...

    def count(self) -> int: ...

    def check_writable(self) -> None: ...

    def close(self) -> None: ...
