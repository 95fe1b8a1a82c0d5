"""SQLite (WAL) store: the embedded default, one file shared by every local process."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from store import tagcounts
from store.records import (
    LOCAL_BATCHES,
    PRUNE_BATCH_ROWS,
    BatchPolicy,
    FeedbackRecord,
    PredictionRecord,
    PredictionStore,
    ResolvedFeedback,
    RowRejected,
    Scorer,
    StoreError,
    dumps,
    texts_frame,
)
from store.retention import prune_in_batches
from store.schema import TABLES, sqlite_added_columns, sqlite_ddl
from tagger.columns import FEATURE_COLUMNS
from tagger.tagquality import TagCounts

log = logging.getLogger("store")

# generated from store/schema.py (the one definition of the schema, shared with PostgreSQL)
SCHEMA = sqlite_ddl()


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


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring an older file's tables up to store/schema.py (e.g. ``feedback.source``); a few
    µs once per connection when nothing is missing. Two processes adding the same column:
    the second one's "duplicate column" is not an error."""
    for statement in sqlite_added_columns({t: _columns(conn, t) for t in TABLES}):
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


class SQLiteStore:
    """SQLite in WAL mode: one connection per thread, readers never block the writer.

    ``synchronous=NORMAL`` keeps every committed row across a process crash or restart
    (the WAL is in the OS page cache); only a power loss can take the last commits.

    ``busy_timeout_seconds`` bounds how long a statement waits for another writer's lock (the
    predictor uses a few ms on its request threads: a locked store must not stall a request).
    :meth:`invalidate` makes every thread reconnect: after a failed write (a connection opened
    while the file was read-only stays read-only) or when the file was replaced under it.
    """

    batch_policy: BatchPolicy = LOCAL_BATCHES

    def __init__(
        self,
        path: Path,
        timeout_seconds: float = 5.0,
        busy_timeout_seconds: float | None = None,
        guard_read_only: bool = False,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        # readers (drift, weekly) open the file read-only and never create one
        self.readonly = readonly
        if readonly and not self.path.is_file():
            raise StoreError(f"{self.path}: no such store (the predictor creates it)")
        self.guard_read_only = guard_read_only
        self._guarded = [Path(f"{self.path}{s}") for s in ("", "-wal", "-shm")]
        self.timeout_seconds = timeout_seconds
        self.busy_timeout_seconds = (
            timeout_seconds if busy_timeout_seconds is None else busy_timeout_seconds
        )
        self._local = threading.local()
        self._generation = 0
        self._inode: tuple[int, int] | None = None
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                if not readonly:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn()  # creates the schema in a new file
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

    def _check_not_read_only(self) -> None:
        """Refuse to touch a database whose files were made read-only (``chattr +i``).

        SQLite writes its -shm file through a shared mmap on every transaction, readers
        included; once the file is immutable such a write faults and the kernel kills the
        process with SIGBUS (issue 9: both workers died). ``access(2)`` sees the immutable
        flag even for root; three calls cost ~2 µs.
        """
        for f in self._guarded:
            if not os.access(f, os.W_OK) and os.path.exists(f):
                raise StoreError(f"{f}: read-only (not touched: its shared memory would fault)")

    def _conn(self) -> sqlite3.Connection:
        if self.guard_read_only:
            self._check_not_read_only()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            self.close()
            conn = None
        if conn is None:
            timeout = getattr(self._local, "busy_timeout", self.busy_timeout_seconds)
            if self.readonly:
                return self._connect_readonly(timeout)
            conn = sqlite3.connect(self.path, timeout=timeout)
            try:
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                # no foreign keys (feedback may precede its prediction): a file created with
                # one before keeps it declared but unenforced
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if not set(TABLES) <= names:  # a new, replaced or older file
                    conn.executescript(SCHEMA)
                _add_missing_columns(conn)  # a file written by an older tagwatch
                st = os.stat(self.path)
            except BaseException:
                conn.close()
                raise
            self._inode = (st.st_dev, st.st_ino)
            self._local.conn = conn
            self._local.generation = self._generation
        return conn

    def _connect_readonly(self, timeout: float) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout)
        try:
            conn.row_factory = sqlite3.Row
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not {"predictions", "feedback"} <= names:
                raise StoreError(f"{self.path}: not a tagwatch store (no predictions table)")
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        self._local.generation = self._generation
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (guarded, read-only for readers), for read queries built
        elsewhere: the drift job's per-bin counts in SQL (drift/sqlcounts.py)."""
        return self._conn()

    def identity(self) -> str | None:
        """A random id written once by the predictor (``meta``), or, in a store made before
        that table, the id of its first row; None for an empty store without one."""
        conn = self._conn()
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
            if row is not None:
                return f"meta:{row[0]}"
        except sqlite3.OperationalError:
            pass  # no meta table yet (opened read-only before the predictor upgraded it)
        first = conn.execute("SELECT id FROM predictions ORDER BY seq LIMIT 1").fetchone()
        return None if first is None else f"first:{first[0]}"

    def set_busy_timeout(self, seconds: float) -> None:
        """This thread's lock wait (the predictor's writer thread waits longer than requests)."""
        self._local.busy_timeout = seconds
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def invalidate(self) -> None:
        """Every thread reopens its connection before its next statement."""
        self._generation += 1

    def replaced(self) -> bool:
        """True when the file at ``path`` is gone or is no longer the one the connections use:
        writes would go to an unlinked inode and be lost."""
        if self._inode is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    _features_of = staticmethod(operator.itemgetter(*FEATURE_COLUMNS))

    @classmethod
    def _params(cls, r: PredictionRecord) -> tuple[Any, ...]:
        return (
            r.id,
            r.created_at,
            r.title,
            r.body,
            r.url,
            dumps(r.tags).decode(),
            dumps(r.scores).decode(),
            r.inference_seconds,
            r.model_version,
            *cls._features_of(r.features),
        )

    # OR IGNORE: a row written twice (a spool replayed after a crash) is stored once
    _INSERT = (
        "INSERT OR IGNORE INTO predictions (id, created_at, title, body, url, tags, scores, "
        "inference_seconds, model_version, "
        + ", ".join(FEATURE_COLUMNS)
        + ") VALUES ("
        + ", ".join("?" * (9 + len(FEATURE_COLUMNS)))
        + ")"
    )

    def save_prediction(self, record: PredictionRecord) -> None:
        self.save_predictions([record])

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Bulk insert in one transaction (idempotent by id).

        Raises :class:`RowRejected` when the rows themselves are refused (text SQLite cannot
        encode, a constraint), :class:`StoreError` for a store fault (locked, read-only, disk
        full, I/O), after which this thread reconnects.
        """
        try:
            conn = self._conn()
            with conn:
                conn.executemany(self._INSERT, (self._params(r) for r in records))
        except _ROW_ERRORS as exc:
            raise RowRejected(f"{type(exc).__name__}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            self.close()  # a connection opened read-only or on a replaced file stays so
            raise StoreError(f"{self.path}: write failed ({exc})") from exc

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
            # sqlite3.Row: `in` looks at values, keys() at column names
            source=row["source"] if "source" in row.keys() else "unknown",  # noqa: SIM118
        )

    def save_feedback(self, feedback: FeedbackRecord) -> bool:
        """Store feedback once; returns False when that prediction already had feedback."""
        try:
            conn = self._conn()
            with conn:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO feedback (prediction_id, created_at, tags, coverage, "
                    "jaccard, n_tags, n_unknown_tags, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        feedback.prediction_id,
                        feedback.created_at,
                        json.dumps(feedback.tags),
                        feedback.coverage,
                        feedback.jaccard,
                        len(feedback.tags),
                        feedback.n_unknown_tags,
                        feedback.source,
                    ),
                )
        except sqlite3.IntegrityError as exc:  # no such prediction (foreign key)
            raise StoreError(f"feedback refused: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: feedback not written ({exc})") from exc
        return cur.rowcount == 1

    # -- feedback for a prediction not visible yet (issue 10) ------------------------------------

    def save_pending_feedback(
        self,
        prediction_id: str,
        tags: Sequence[str],
        n_unknown_tags: int,
        received_at: float,
        source: str = "unknown",
    ) -> str:
        """Keep feedback until its prediction arrives: "queued", "duplicate" (the same tags are
        pending or stored) or "conflict" (other tags are); the first one received wins."""
        try:
            conn = self._conn()
            with conn:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO feedback_pending (prediction_id, received_at, tags, "
                    "n_unknown_tags, source) VALUES (?, ?, ?, ?, ?)",
                    (prediction_id, received_at, json.dumps(list(tags)), n_unknown_tags, source),
                )
                if cur.rowcount == 1:
                    # resolved meanwhile by another process (its prediction arrived)?
                    row = conn.execute(
                        "SELECT tags FROM feedback WHERE prediction_id = ?", (prediction_id,)
                    ).fetchone()
                    if row is None:
                        return "queued"
                    conn.execute(
                        "DELETE FROM feedback_pending WHERE prediction_id = ?", (prediction_id,)
                    )
                else:
                    row = conn.execute(
                        "SELECT tags FROM feedback_pending WHERE prediction_id = ?",
                        (prediction_id,),
                    ).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: pending feedback not written ({exc})") from exc
        if row is None:  # cannot happen within one transaction; be safe
            raise StoreError("pending feedback neither inserted nor found")
        return "duplicate" if sorted(json.loads(row["tags"])) == sorted(tags) else "conflict"

    def resolve_pending_feedback(
        self, score: Scorer, expire_before: float, limit: int = 500
    ) -> tuple[list[ResolvedFeedback], int]:
        """Store the pending feedback whose prediction has arrived, scored with ``score``; drop
        pending received before ``expire_before`` still without one. One transaction, so
        processes resolving together store (and count) each feedback once. Returns the
        feedback stored (each counted by the caller) and the number dropped."""
        try:
            conn = self._conn()
            if conn.execute("SELECT 1 FROM feedback_pending LIMIT 1").fetchone() is None:
                return [], 0  # the usual case: a read, no write lock
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT fp.prediction_id, fp.received_at, fp.tags, fp.n_unknown_tags, "
                    "fp.source, p.tags AS predicted FROM feedback_pending fp "
                    "JOIN predictions p ON p.id = fp.prediction_id LIMIT ?",
                    (limit,),
                ).fetchall()
                stored: list[ResolvedFeedback] = []
                for r in rows:
                    tags, predicted = json.loads(r["tags"]), json.loads(r["predicted"])
                    cov, jac = score(predicted, tags)
                    record = ResolvedFeedback(
                        prediction_id=r["prediction_id"],
                        tags=tags,
                        coverage=cov,
                        jaccard=jac,
                        n_unknown_tags=r["n_unknown_tags"],
                        created_at=r["received_at"],
                        source=r["source"],
                        predicted=predicted,
                    )
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO feedback (prediction_id, created_at, tags, "
                        "coverage, jaccard, n_tags, n_unknown_tags, source) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.prediction_id, record.created_at, r["tags"], cov, jac,
                         len(tags), record.n_unknown_tags, record.source),
                    )  # fmt: skip
                    if cur.rowcount == 1:
                        stored.append(record)
                    else:  # feedback came directly once the prediction was visible: it won
                        direct = conn.execute(
                            "SELECT tags FROM feedback WHERE prediction_id = ?",
                            (record.prediction_id,),
                        ).fetchone()
                        if direct is not None and sorted(json.loads(direct[0])) != sorted(tags):
                            log.warning(
                                "pending feedback for %s dropped: different feedback for it "
                                "came directly once it was stored", record.prediction_id
                            )  # fmt: skip
                conn.executemany(
                    "DELETE FROM feedback_pending WHERE prediction_id = ?",
                    [(r["prediction_id"],) for r in rows],
                )
                expired = conn.execute(
                    "DELETE FROM feedback_pending WHERE received_at < ? "
                    "AND prediction_id NOT IN (SELECT id FROM predictions)",
                    (expire_before,),
                ).rowcount
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: pending feedback not resolved ({exc})") from exc
        return stored, expired

    # -- retention (store/retention.py) ---------------------------------------------------------

    _TEXT_WATERMARK = "retention_text_blanked_until"

    def prune(
        self, text_before: float, rows_before: float, batch: int = PRUNE_BATCH_ROWS
    ) -> tuple[int, int]:
        """Delete rows (and their feedback) served before ``rows_before``, then blank the
        title, body and url of rows served before ``text_before``; ``batch`` rows per short
        transaction, :data:`PRUNE_PAUSE_SECONDS` apart, so writers never wait long.

        Blanking resumes from a watermark in ``meta`` (the last blanked row's time): an hourly
        run reads only the rows that aged past the cut-off since the last run.
        """
        try:
            conn = self._conn()
            return prune_in_batches(
                lambda: self._delete_batch(conn, rows_before, batch),
                lambda after: self._blank_batch(conn, text_before, batch, after),
                batch,
            )
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: prune failed ({exc})") from exc

    # rows in (created_at, seq) order after ``a`` and up to ``b`` included, below a cut-off
    _RANGE = (
        "created_at >= :a0 AND (created_at > :a0 OR seq > :a1) AND created_at < :before "
        "AND (created_at < :b0 OR (created_at = :b0 AND seq <= :b1))"
    )

    def _batch_end(
        self, conn: sqlite3.Connection, after: tuple[float, int], before: float, batch: int
    ) -> tuple[tuple[float, int], int]:
        """The last row of the next batch and its size, read before taking the write lock:
        the transaction then runs one statement per table (C speed, a few ms of lock)."""
        rows = conn.execute(
            "SELECT created_at, seq FROM predictions WHERE created_at >= ? "
            "AND (created_at > ? OR seq > ?) AND created_at < ? ORDER BY created_at, seq LIMIT ?",
            (after[0], after[0], after[1], before, batch),
        ).fetchall()
        conn.commit()  # end the read transaction
        if not rows:
            return after, 0
        return (rows[-1][0], rows[-1][1]), len(rows)

    def _delete_batch(self, conn: sqlite3.Connection, before: float, batch: int) -> int:
        end, n = self._batch_end(conn, (-math.inf, -1), before, batch)
        if n == 0:
            return 0
        where = {"a0": -math.inf, "a1": -1, "before": before, "b0": end[0], "b1": end[1]}
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "DELETE FROM feedback WHERE prediction_id IN "
                f"(SELECT id FROM predictions WHERE {self._RANGE})",
                where,
            )
            conn.execute(f"DELETE FROM predictions WHERE {self._RANGE}", where)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return n

    def _blank_batch(
        self, conn: sqlite3.Connection, before: float, batch: int, after: tuple[float, int] | None
    ) -> tuple[int, tuple[float, int] | None]:
        """One batch of blanking, in (created_at, seq) order from ``after`` (None: from the
        watermark); (rows blanked, the last row looked at, None when there are no more)."""
        if after is None:
            mark = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (self._TEXT_WATERMARK,)
            ).fetchone()
            after = (float(mark[0]) if mark is not None else -math.inf, -1)
        end, n = self._batch_end(conn, after, before, batch)
        if n == 0:
            return 0, None
        where = {"a0": after[0], "a1": after[1], "before": before, "b0": end[0], "b1": end[1]}
        conn.execute("BEGIN IMMEDIATE")
        try:
            blanked = conn.execute(
                f"UPDATE predictions SET title = '', body = '', url = NULL WHERE {self._RANGE} "
                "AND (title <> '' OR body <> '' OR url IS NOT NULL)",
                where,
            ).rowcount
            # the next run starts at this instant
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (self._TEXT_WATERMARK, repr(end[0])),
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return max(blanked, 0), end if n == batch else None

    @contextlib.contextmanager
    def prune_lock(self) -> Iterator[bool]:
        """One pruner at a time across processes (a lock file beside the store): yields
        False, without waiting, when another process holds it."""
        path = self.path.with_name(self.path.name + "-prune.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame:
        """Stored features of predictions made in [start, end) with ``seq > after_seq``.

        Columns: ``seq``, ``created_at`` (UTC timestamps), ``model_version`` (the version that
        served the row: the drift job judges each version against its own baseline), the
        feature columns, and
        ``n_feedback_tags`` / ``n_unknown_feedback_tags`` (NaN where no feedback came).
        """
        cols = ", ".join(f"p.{c}" for c in FEATURE_COLUMNS)
        query = (
            f"SELECT p.seq, p.created_at, p.model_version, {cols}, f.n_tags AS n_feedback_tags, "
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

    def labelled(self, since: float, until: float) -> pd.DataFrame:
        """Questions served in [since, until) that received feedback: the retraining data.

        Columns: ``created_at`` (UTC timestamps, when served), ``title``, ``body``, ``tags``
        (the user's feedback tags, list[str]), ``predicted`` (list[str]), ``model_version``,
        ``jaccard``, ``coverage``, ``source`` (the credential the feedback came with:
        store.records.FEEDBACK_SOURCES); sorted by time.
        """
        conn = self._conn()
        # a file read-only and older than the column (the predictor adds it at its start)
        source = "f.source" if "source" in _columns(conn, "feedback") else "'unknown'"
        query = (
            "SELECT p.created_at, p.title, p.body, f.tags, p.tags AS predicted, "
            f"p.model_version, f.jaccard, f.coverage, {source} AS source FROM predictions p "
            "JOIN feedback f ON f.prediction_id = p.id "
            "WHERE p.created_at >= ? AND p.created_at < ? ORDER BY p.created_at, p.seq"
        )
        df = pd.read_sql_query(query, conn, params=(since, until))
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        df["tags"] = [json.loads(t) for t in df["tags"]]
        df["predicted"] = [json.loads(t) for t in df["predicted"]]
        return df

    def texts(self, start: float, end: float, limit: int) -> pd.DataFrame:
        """As :meth:`store.records.PredictionStore.texts`."""
        conn = self._conn()
        where = "p.created_at >= ? AND p.created_at < ?"
        (n,) = conn.execute(
            f"SELECT COUNT(*) FROM predictions p WHERE {where}", (start, end)
        ).fetchone()
        query = (
            "SELECT p.title, p.url, p.model_version, f.tags AS feedback_tags FROM predictions p "
            f"LEFT JOIN feedback f ON f.prediction_id = p.id WHERE {where} AND p.seq % ? = 0 "
            "ORDER BY p.seq LIMIT ?"
        )
        stride = max(1, int(n) // max(limit, 1))
        df = pd.read_sql_query(query, conn, params=(start, end, stride, limit))
        return texts_frame(df)

    def count_labelled(self, since: float, until: float) -> int:
        """As :meth:`labelled`'s row count, in one query."""
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM predictions p JOIN feedback f ON f.prediction_id = p.id "
                "WHERE p.created_at >= ? AND p.created_at < ?",
                (since, until),
            )
            .fetchone()
        )
        return int(row[0])

    def tag_counts(
        self, since: float, until: float, vocabulary: Sequence[str]
    ) -> dict[str, TagCounts]:
        """As :meth:`store.records.PredictionStore.tag_counts` (json_each, one query)."""
        params = tagcounts.counts_params(since, until, vocabulary)
        rows = self._conn().execute(tagcounts.counts_sql("sqlite"), params).fetchall()
        return tagcounts.counts_of(rows, vocabulary)

    def tag_examples(
        self, tag: str, since: float, until: float, limit: int = 3
    ) -> list[dict[str, Any]]:
        """As :meth:`store.records.PredictionStore.tag_examples`."""
        params = tagcounts.examples_params(tag, since, until, limit)
        rows = self._conn().execute(tagcounts.examples_sql("sqlite"), params).fetchall()
        return tagcounts.examples_of(rows)

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
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"{self.path}: not writable ({exc})") from exc

    def close(self) -> None:
        """Close this thread's connection (the next statement reopens it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# refusals of the rows themselves; every other error is a fault of the store
_ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,  # UnicodeEncodeError: a lone surrogate
    TypeError,
    OverflowError,
)


def spool_dir_for(url: str) -> Path | None:
    """Where a writer spools rows of the store at ``url``: ``<file>-spool/`` beside the file,
    so that it is on the same disk and survives what the store survives."""
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        return Path("var/spool")  # a remote database: the predictor host's own disk
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    elif "://" in url or url.startswith("sqlite:"):
        return None
    else:
        path = Path(url)
    if not path.name or path.name.startswith(":memory:") or "mode=memory" in url:
        return None  # an in-memory database has nothing to spool for
    return path.with_name(path.name + "-spool")


def open_store(url: str, **options: Any) -> PredictionStore:
    """A store from a URL: ``sqlite:///relative/or/abs/path.db``, a plain file path, or
    ``postgresql://user:password@host:port/database`` (:class:`store.sql.SQLStore`).

    ``options`` go to the store (``timeout_seconds``, ``busy_timeout_seconds``, ``readonly``).
    """
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        from store.sql import SQLStore  # SQLAlchemy is imported only for a PostgreSQL store

        return SQLStore(url, **options)
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url.removeprefix("sqlite:///")), **options)
    if url.startswith("sqlite:"):
        raise StoreError(
            f"store URL {url!r}: expected sqlite:///path/to/file.sqlite3 (three slashes, then "
            "a relative path; four for an absolute one: sqlite:////var/lib/tagwatch.sqlite3)"
        )
    if "://" in url:
        raise StoreError(
            f"unsupported store URL scheme: {url.split('://')[0]!r} in {url!r}: "
            "expected sqlite:///path/to/file.sqlite3, postgresql://user@host/db or a file path"
        )
    return SQLiteStore(Path(url), **options)
