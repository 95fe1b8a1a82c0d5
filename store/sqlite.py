"""SQLite (WAL) store: the embedded default, one file shared by every local process."""

from __future__ import annotations

import json
import operator
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from store.records import FeedbackRecord, PredictionRecord, PredictionStore, StoreError
from tagger.model import FEATURE_COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    created_at        REAL NOT NULL,
    title             TEXT NOT NULL,
    body              TEXT NOT NULL,
    url               TEXT,
    tags              TEXT NOT NULL,
    scores            TEXT NOT NULL,
    inference_seconds REAL NOT NULL,
    model_version     TEXT NOT NULL,
    title_chars       INTEGER NOT NULL,
    body_chars        INTEGER NOT NULL,
    n_code_blocks     INTEGER NOT NULL,
    n_links           INTEGER NOT NULL,
    n_tokens          INTEGER NOT NULL,
    oov_ratio         REAL NOT NULL,
    n_predicted_tags  INTEGER NOT NULL,
    max_score         REAL NOT NULL,
    top_tag           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_created_at ON predictions (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id  TEXT PRIMARY KEY REFERENCES predictions (id),
    created_at     REAL NOT NULL,
    tags           TEXT NOT NULL,
    coverage       REAL NOT NULL,
    jaccard        REAL NOT NULL,
    n_tags         INTEGER NOT NULL,
    n_unknown_tags INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_created_at ON feedback (created_at);
"""


def _row_to_record(row: sqlite3.Row) -> PredictionRecord:
    return PredictionRecord(
        id=row["id"],
        created_at=row["created_at"],
        title=row["title"],
        body=row["body"],
        url=row["url"],
        tags=json.loads(row["tags"]),
        scores=json.loads(row["scores"]),
        inference_seconds=row["inference_seconds"],
        model_version=row["model_version"],
        features={c: row[c] for c in FEATURE_COLUMNS},
    )


class SQLiteStore:
    """SQLite in WAL mode: one connection per thread, readers never block the writer.

    ``synchronous=NORMAL`` keeps every committed row across a process crash or restart
    (the WAL is in the OS page cache); only a power loss can take the last commits.
    """

    def __init__(self, path: Path, timeout_seconds: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self._local = threading.local()
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._conn()
                with conn:
                    conn.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                # gunicorn workers open a new database together: switching it to WAL and
                # creating the schema fail fast with "locked" instead of waiting (busy handler
                # not used), so the losers retry
                self.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: cannot open store ({exc})") from exc
                time.sleep(0.02)
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"{self.path}: cannot open store ({exc})") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_seconds)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    _features_of = staticmethod(operator.itemgetter(*FEATURE_COLUMNS))

    @classmethod
    def _params(cls, r: PredictionRecord) -> tuple[Any, ...]:
        return (
            r.id,
            r.created_at,
            r.title,
            r.body,
            r.url,
            json.dumps(r.tags),
            json.dumps(r.scores),
            r.inference_seconds,
            r.model_version,
            *cls._features_of(r.features),
        )

    _INSERT = (
        "INSERT INTO predictions (id, created_at, title, body, url, tags, scores, "
        "inference_seconds, model_version, "
        + ", ".join(FEATURE_COLUMNS)
        + ") VALUES ("
        + ", ".join("?" * (9 + len(FEATURE_COLUMNS)))
        + ")"
    )

    def save_prediction(self, record: PredictionRecord) -> None:
        conn = self._conn()
        with conn:
            conn.execute(self._INSERT, self._params(record))

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Bulk insert in one transaction (replays, backfills, benchmarks)."""
        conn = self._conn()
        with conn:
            conn.executemany(self._INSERT, (self._params(r) for r in records))

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        row = (
            self._conn()
            .execute("SELECT * FROM predictions WHERE id = ?", (prediction_id,))
            .fetchone()
        )
        return _row_to_record(row) if row else None

    def get_feedback(self, prediction_id: str) -> FeedbackRecord | None:
        row = (
            self._conn()
            .execute("SELECT * FROM feedback WHERE prediction_id = ?", (prediction_id,))
            .fetchone()
        )
        if row is None:
            return None
        return FeedbackRecord(
            prediction_id=row["prediction_id"],
            tags=json.loads(row["tags"]),
            coverage=row["coverage"],
            jaccard=row["jaccard"],
            n_unknown_tags=row["n_unknown_tags"],
            created_at=row["created_at"],
        )

    def save_feedback(self, feedback: FeedbackRecord) -> bool:
        """Store feedback once; returns False when that prediction already had feedback."""
        conn = self._conn()
        with conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO feedback (prediction_id, created_at, tags, coverage, "
                "jaccard, n_tags, n_unknown_tags) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    feedback.prediction_id,
                    feedback.created_at,
                    json.dumps(feedback.tags),
                    feedback.coverage,
                    feedback.jaccard,
                    len(feedback.tags),
                    feedback.n_unknown_tags,
                ),
            )
        return cur.rowcount == 1

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame:
        """Stored features of predictions made in [start, end) with ``seq > after_seq``.

        Columns: ``seq``, ``created_at`` (UTC timestamps), the feature columns, and
        ``n_feedback_tags`` / ``n_unknown_feedback_tags`` (NaN where no feedback came).
        """
        cols = ", ".join(f"p.{c}" for c in FEATURE_COLUMNS)
        query = (
            f"SELECT p.seq, p.created_at, {cols}, f.n_tags AS n_feedback_tags, "
            "f.n_unknown_tags AS n_unknown_feedback_tags FROM predictions p "
            "LEFT JOIN feedback f ON f.prediction_id = p.id "
            "WHERE p.created_at >= ? AND p.created_at < ? AND p.seq > ? ORDER BY p.seq"
        )
        df = pd.read_sql_query(query, self._conn(), params=(start, end, after_seq))
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        return df

    def problematic(self, since: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
        """The latest problematic results: worst Jaccard with feedback, empty, most OOV."""
        conn = self._conn()
        base = (
            "SELECT p.id, p.created_at, p.title, p.url, p.tags, p.oov_ratio, p.max_score, "
            "f.tags AS feedback_tags, f.jaccard, f.coverage FROM predictions p "
            "LEFT JOIN feedback f ON f.prediction_id = p.id WHERE p.created_at >= ? "
        )
        queries = {
            "lowest_jaccard": base + "AND f.jaccard IS NOT NULL "
            "ORDER BY f.jaccard ASC, p.created_at DESC LIMIT ?",
            "empty_predictions": base + "AND p.n_predicted_tags = 0 "
            "ORDER BY p.created_at DESC LIMIT ?",
            "highest_oov": base + "ORDER BY p.oov_ratio DESC, p.created_at DESC LIMIT ?",
        }
        out: dict[str, list[dict[str, Any]]] = {}
        for name, q in queries.items():
            rows = []
            for row in conn.execute(q, (since, limit)):
                d = dict(row)
                d["tags"] = json.loads(d["tags"])
                d["feedback_tags"] = json.loads(d["feedback_tags"]) if d["feedback_tags"] else None
                rows.append(d)
            out[name] = rows
        return out

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def iter_predictions(self, batch: int = 1000) -> Iterator[PredictionRecord]:
        last = 0
        while True:
            rows = (
                self._conn()
                .execute(
                    "SELECT * FROM predictions WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch)
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1]["seq"]
            yield from (_row_to_record(r) for r in rows)

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a write transaction can be taken now."""
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: not writable ({exc})") from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def open_store(url: str) -> PredictionStore:
    """A store from a URL: ``sqlite:///relative/or/abs/path.db`` or a plain file path."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url.removeprefix("sqlite:///")))
    if "://" in url:
        raise StoreError(f"unsupported store URL scheme: {url.split('://')[0]!r}")
    return SQLiteStore(Path(url))
