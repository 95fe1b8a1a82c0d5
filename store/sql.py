"""PostgreSQL store on SQLAlchemy Core (psycopg 3): one database shared by several replicas.

The schema is :mod:`store.schema`, versioned by Alembic (``store/migrations/``). A writer (the
predictor) upgrades it at open under a PostgreSQL advisory lock, so that replicas starting
together migrate once; a reader (drift, weekly) never creates or migrates anything.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL, Connection, Engine, make_url

from store import tagcounts
from store.records import (
    PRUNE_BATCH_ROWS,
    BatchPolicy,
    FeedbackRecord,
    PredictionRecord,
    ResolvedFeedback,
    RowRejected,
    Scorer,
    StoreError,
    dumps,
    texts_frame,
)
from store.retention import prune_in_batches
from store.schema import feedback, feedback_pending, meta, predictions
from tagger.columns import FEATURE_COLUMNS
from tagger.tagquality import TagCounts

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# the newest Alembic revision (a test checks it against store/migrations/versions)
HEAD_REVISION = "0002"
# pg_advisory_xact_lock keys: "tagwatch" in ASCII, + 1 for the pruner
MIGRATION_LOCK = 0x7461677761746368
PRUNE_LOCK = MIGRATION_LOCK + 1
INSERT_LOCK = MIGRATION_LOCK + 2
SCHEMES = ("postgresql://", "postgresql+psycopg://")
_TEXT_WATERMARK = "retention_text_blanked_until"


def is_postgres_url(url: str) -> bool:
    return url.startswith(SCHEMES)


def engine_url(url: str) -> URL:
    """``postgresql://`` → SQLAlchemy's psycopg 3 driver (its default would be psycopg2)."""
    if not is_postgres_url(url):
        raise StoreError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host/db)")
    try:
        return make_url(url).set(drivername="postgresql+psycopg")
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise StoreError(f"invalid store URL: {exc}") from exc


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Any:
    """Alembic's configuration without an ini file: the scripts ship inside the package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = engine_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _one_line(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's statement dump and background links."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def upgrade_schema(conn: Connection) -> bool:
    """Bring the schema to the newest revision; True when something was migrated.

    Cheap when already there (one query, no lock). Otherwise one transaction under
    ``pg_advisory_xact_lock``: a replica starting at the same time waits, then finds the
    schema at head and does nothing (PostgreSQL's DDL is transactional).
    """
    if _revision(conn) == HEAD_REVISION:
        return False
    from alembic import command

    with conn.begin():
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        command.upgrade(alembic_config(connection=conn), "head")
    return True


def _revision(conn: Connection) -> str | None:
    try:
        if conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar() is None:
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        conn.rollback()


_REQUIRED = ("predictions", "feedback", "feedback_pending", "meta")


def _missing_tables(conn: Connection) -> list[str]:
    names = conn.execute(
        sa.text("SELECT " + ", ".join(f"to_regclass('{t}')" for t in _REQUIRED))
    ).one()
    return [t for t, found in zip(_REQUIRED, names, strict=True) if found is None]


def _record(row: Any) -> PredictionRecord:
    return PredictionRecord(
        id=row.id,
        created_at=row.created_at,
        title=row.title,
        body=row.body,
        url=row.url,
        tags=json.loads(row.tags),
        scores=json.loads(row.scores),
        inference_seconds=row.inference_seconds,
        model_version=row.model_version,
        features={c: row._mapping[c] for c in FEATURE_COLUMNS},
    )


class SQLStore:
    """The PredictionStore protocol on PostgreSQL; safe to share between threads.

    Inserts of predictions are serialised by a transaction advisory lock (one batch of ~64
    rows at a time across replicas, ~1 ms each): ``seq`` then grows in commit order, as in
    SQLite, which incremental readers rely on.

    A small pool (2 connections + 2 overflow, pinged before use): the predictor has a request
    thread and the write-behind thread per worker. Errors: rows the database refuses (NUL in a
    text, an encoding error, a constraint) raise :class:`RowRejected`; anything else (server
    down, timeout, read-only) :class:`StoreError`, and the pool is renewed.

    ``busy_timeout_seconds`` / :meth:`set_busy_timeout` bound this thread's statements
    (``lock_timeout``, and ``statement_timeout`` with a floor of 250 ms: a remote round trip is
    not a lock wait); unset, statements are unbounded (the drift job's long reads).
    """

    STATEMENT_TIMEOUT_FLOOR_SECONDS = 0.25
    # a commit waits for the network and the server's fsync (~5-15 ms a batch, measured
    # locally): batches are written by the writer thread only, up to 0.25 s of rows each, so
    # that the fixed cost per transaction, paid on the predictor's cores when the database is
    # local, stays low per row while a row still reaches the database well within a second
    batch_policy = BatchPolicy(max_rows=2048, max_delay_seconds=0.25, on_request_thread=False)

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 5.0,
        busy_timeout_seconds: float | None = None,
        guard_read_only: bool = False,  # a file's concern (SQLite); accepted, unused here
        readonly: bool = False,
        pool_size: int = 2,
    ) -> None:
        del guard_read_only
        self.url = engine_url(url)
        self.display = self.url.set(drivername="postgresql").render_as_string(hide_password=True)
        self.readonly = readonly
        self.timeout_seconds = timeout_seconds
        self._default_timeout = busy_timeout_seconds
        self._local = threading.local()
        connect_args: dict[str, Any] = {
            # libpq takes whole seconds (and treats 1 as 2)
            "connect_timeout": max(2, math.ceil(timeout_seconds)),
            "application_name": "tagwatch-reader" if readonly else "tagwatch",
        }
        if readonly:  # a reader cannot write even by mistake
            connect_args["options"] = "-c default_transaction_read_only=on"
        self.engine: Engine = sa.create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=2,
            pool_timeout=max(timeout_seconds, 1.0),
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        sa.event.listen(self.engine, "checkout", self._on_checkout)
        # the schema's setup may wait for another replica's migration (advisory lock): not
        # bounded by a request's short timeout
        self._local.timeout = max(timeout_seconds, 60.0)
        try:
            with self.engine.connect() as conn:
                if readonly:
                    missing = _missing_tables(conn)
                    if missing:
                        raise StoreError(
                            f"{self.display}: no tagwatch schema (missing {', '.join(missing)}); "
                            "the predictor creates it, or run: python -m store migrate --url URL"
                        )
                else:
                    upgrade_schema(conn)
        except StoreError:
            self.engine.dispose()
            raise
        except (sa_exc.SQLAlchemyError, psycopg.Error, OSError) as exc:
            self.engine.dispose()
            raise StoreError(f"{self.display}: cannot open store ({_one_line(exc)})") from exc
        finally:
            del self._local.timeout

    # -- connections --------------------------------------------------------------------------

    def _thread_timeout(self) -> float | None:
        return getattr(self._local, "timeout", self._default_timeout)

    def _on_checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        """Apply this thread's timeouts to the connection it gets (only when they change)."""
        seconds = self._thread_timeout()
        if record.info.get("timeout") == seconds:
            return
        if seconds is None:
            lock_ms = stmt_ms = 0
        else:
            lock_ms = max(1, int(seconds * 1000))
            stmt_ms = max(lock_ms, int(self.STATEMENT_TIMEOUT_FLOOR_SECONDS * 1000))
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a SET outside a transaction is not undone by a rollback
        try:
            dbapi_conn.execute(f"SET lock_timeout = {lock_ms}; SET statement_timeout = {stmt_ms}")
        finally:
            dbapi_conn.autocommit = autocommit
        record.info["timeout"] = seconds

    @contextlib.contextmanager
    def _tx(self, what: str, rows: bool = False) -> Iterator[Connection]:
        """One transaction; errors mapped to :class:`RowRejected` (``rows``) / StoreError."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except (sa_exc.SQLAlchemyError, psycopg.Error, OSError) as exc:
            raise self._error(exc, what, rows) from exc
        except (ValueError, TypeError, OverflowError) as exc:
            if rows:  # a value the driver cannot send (an unencodable string, a bad type)
                raise RowRejected(f"{type(exc).__name__}: {exc}") from exc
            raise

    @contextlib.contextmanager
    def _read(self, what: str = "read failed") -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except StoreError:
            raise
        except (sa_exc.SQLAlchemyError, psycopg.Error, OSError) as exc:
            raise self._error(exc, what, rows=False) from exc

    def _error(self, exc: BaseException, what: str, rows: bool) -> StoreError:
        orig = getattr(exc, "orig", None) or exc
        if rows and _is_row_refusal(exc, orig):
            return RowRejected(f"{type(orig).__name__}: {_one_line(exc)}")
        if not isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
            self.invalidate()  # a connection broken by a restart is not reused
        return StoreError(f"{self.display}: {what} ({_one_line(exc)})")

    def set_busy_timeout(self, seconds: float) -> None:
        """This thread's statement bound (the writer thread waits longer than requests)."""
        self._local.timeout = seconds

    def invalidate(self) -> None:
        """Every pooled connection is replaced before its next use."""
        self.engine.dispose(close=False)

    def replaced(self) -> bool:
        return False  # a server has no file to be swapped under the store

    def close(self) -> None:
        self.engine.dispose()

    def identity(self) -> str | None:
        with self._read() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "store_id")).scalar()
        return None if value is None else f"meta:{value}"

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless a write transaction can be taken now."""
        with self._tx("not writable") as conn:
            if conn.execute(sa.text("SHOW transaction_read_only")).scalar() != "off":
                raise StoreError(f"{self.display}: not writable (read-only transaction)")

    # -- predictions --------------------------------------------------------------------------

    _COLUMNS = ("id", "created_at", "title", "body", "url", "tags", "scores",
                "inference_seconds", "model_version", *FEATURE_COLUMNS)  # fmt: skip
    _features_of = staticmethod(operator.itemgetter(*FEATURE_COLUMNS))

    # rows are COPied into a session's temporary table, then moved with one INSERT … SELECT …
    # ON CONFLICT: ~10 µs of CPU a row, against ~40 for a multi-row INSERT (psycopg adapts
    # every parameter in Python) and more for executemany (a statement per row)
    _INCOMING = (
        "CREATE TEMP TABLE IF NOT EXISTS incoming ON COMMIT DELETE ROWS AS "
        f"SELECT {', '.join(_COLUMNS)} FROM predictions WITH NO DATA"
    )
    _COPY = f"COPY incoming ({', '.join(_COLUMNS)}) FROM STDIN"
    _MOVE = (
        f"INSERT INTO predictions ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} "
        "FROM incoming ON CONFLICT (id) DO NOTHING"
    )

    def save_prediction(self, record: PredictionRecord) -> None:
        self.save_predictions([record])

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """COPY, then one INSERT … SELECT … ON CONFLICT (id) DO NOTHING, in one transaction
        (idempotent: a replayed spool stores each row once)."""
        if not records:
            return
        with self._tx("write failed", rows=True) as conn:
            # writers take turns (held until commit): seq order is then commit order, so a
            # reader resuming after the last seq it saw (the drift job) never skips a row
            # that a slower replica committed later with a smaller seq
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": INSERT_LOCK})
            info = conn.connection.info
            if not info.get("incoming"):  # once per connection (a rollback undoes it)
                conn.exec_driver_sql(self._INCOMING)
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            features = self._features_of
            with raw.cursor() as cur:
                with cur.copy(self._COPY) as copy:
                    for r in records:
                        copy.write_row((r.id, r.created_at, r.title, r.body, r.url,
                                        dumps(r.tags).decode(), dumps(r.scores).decode(),
                                        r.inference_seconds, r.model_version,
                                        *features(r.features)))  # fmt: skip
                cur.execute(self._MOVE)
        info["incoming"] = True

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(predictions).where(predictions.c.id == prediction_id)
            ).first()
        return _record(row) if row is not None else None

    def count(self) -> int:
        with self._read() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
            )

    def iter_predictions(self, batch: int = 1000) -> Iterator[PredictionRecord]:
        last = 0
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(predictions)
                    .where(predictions.c.seq > last)
                    .order_by(predictions.c.seq)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1].seq
            yield from (_record(r) for r in rows)

    # -- feedback -----------------------------------------------------------------------------

    def get_feedback(self, prediction_id: str) -> FeedbackRecord | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(feedback).where(feedback.c.prediction_id == prediction_id)
            ).first()
        if row is None:
            return None
        return FeedbackRecord(
            prediction_id=row.prediction_id,
            tags=json.loads(row.tags),
            coverage=row.coverage,
            jaccard=row.jaccard,
            n_unknown_tags=row.n_unknown_tags,
            created_at=row.created_at,
            source=row.source,
        )

    @staticmethod
    def _feedback_values(f: FeedbackRecord, tags_json: str | None = None) -> dict[str, Any]:
        return {
            "prediction_id": f.prediction_id,
            "created_at": f.created_at,
            "tags": tags_json if tags_json is not None else json.dumps(f.tags),
            "coverage": f.coverage,
            "jaccard": f.jaccard,
            "n_tags": len(f.tags),
            "n_unknown_tags": f.n_unknown_tags,
            "source": f.source,
        }

    # RETURNING: psycopg's rowcount of an INSERT is lost once SQLAlchemy closes the cursor
    _INSERT_FEEDBACK = (
        pg_insert(feedback)
        .on_conflict_do_nothing(index_elements=["prediction_id"])
        .returning(feedback.c.prediction_id)
    )

    def save_feedback(self, feedback: FeedbackRecord) -> bool:
        """Store feedback once; returns False when that prediction already had feedback."""
        with self._tx("feedback not written") as conn:
            inserted = conn.execute(self._INSERT_FEEDBACK, self._feedback_values(feedback))
            return inserted.first() is not None

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
        fp = feedback_pending
        with self._tx("pending feedback not written") as conn:
            inserted = conn.execute(
                pg_insert(fp)
                .values(
                    prediction_id=prediction_id,
                    received_at=received_at,
                    tags=json.dumps(list(tags)),
                    n_unknown_tags=n_unknown_tags,
                    source=source,
                )
                .on_conflict_do_nothing(index_elements=["prediction_id"])
                .returning(fp.c.prediction_id)
            ).first()
            if inserted is not None:
                # resolved meanwhile by another replica (its prediction arrived)?
                stored = conn.execute(
                    sa.select(feedback.c.tags).where(feedback.c.prediction_id == prediction_id)
                ).scalar()
                if stored is None:
                    return "queued"
                conn.execute(sa.delete(fp).where(fp.c.prediction_id == prediction_id))
            else:
                stored = conn.execute(
                    sa.select(fp.c.tags).where(fp.c.prediction_id == prediction_id)
                ).scalar()
        if stored is None:  # the pending row was resolved between the two statements
            stored = self._stored_feedback_tags(prediction_id)
            if stored is None:
                raise StoreError("pending feedback neither inserted nor found")
        return "duplicate" if sorted(json.loads(stored)) == sorted(tags) else "conflict"

    def _stored_feedback_tags(self, prediction_id: str) -> str | None:
        with self._read() as conn:
            tags: str | None = conn.execute(
                sa.select(feedback.c.tags).where(feedback.c.prediction_id == prediction_id)
            ).scalar()
        return tags

    def resolve_pending_feedback(
        self, score: Scorer, expire_before: float, limit: int = 500
    ) -> tuple[list[ResolvedFeedback], int]:
        """Store the pending feedback whose prediction has arrived, scored with ``score``; drop
        pending received before ``expire_before`` still without one. Rows are locked
        ``FOR UPDATE SKIP LOCKED``: replicas resolving together store (and count) each once."""
        fp, p = feedback_pending, predictions
        with self._read() as conn:
            if conn.execute(sa.select(fp.c.prediction_id).limit(1)).first() is None:
                return [], 0  # the usual case: one indexed read
        stored: list[ResolvedFeedback] = []
        with self._tx("pending feedback not resolved") as conn:
            rows = conn.execute(
                sa.select(
                    fp.c.prediction_id,
                    fp.c.received_at,
                    fp.c.tags,
                    fp.c.n_unknown_tags,
                    fp.c.source,
                    p.c.tags.label("predicted"),
                )
                .join(p, p.c.id == fp.c.prediction_id)
                .limit(limit)
                .with_for_update(of=fp, skip_locked=True)
            ).all()
            for r in rows:
                tags, predicted = json.loads(r.tags), json.loads(r.predicted)
                cov, jac = score(predicted, tags)
                record = ResolvedFeedback(
                    prediction_id=r.prediction_id,
                    tags=tags,
                    coverage=cov,
                    jaccard=jac,
                    n_unknown_tags=r.n_unknown_tags,
                    created_at=r.received_at,
                    source=r.source,
                    predicted=predicted,
                )
                result = conn.execute(
                    self._INSERT_FEEDBACK, self._feedback_values(record, tags_json=r.tags)
                )
                if result.first() is not None:  # else feedback came directly once visible
                    stored.append(record)
            if rows:
                conn.execute(
                    sa.delete(fp).where(fp.c.prediction_id.in_([r.prediction_id for r in rows]))
                )
            expired = conn.execute(
                sa.delete(fp).where(
                    fp.c.received_at < expire_before,
                    ~sa.exists().where(p.c.id == fp.c.prediction_id),
                )
            ).rowcount
        return stored, expired

    # -- retention ----------------------------------------------------------------------------

    def prune(
        self, text_before: float, rows_before: float, batch: int = PRUNE_BATCH_ROWS
    ) -> tuple[int, int]:
        """Delete rows (and their feedback) served before ``rows_before``, then blank the
        title, body and url of rows served before ``text_before``; ``batch`` rows per short
        transaction, :data:`PRUNE_PAUSE_SECONDS` apart, so writers never wait long.

        Blanking resumes from a watermark in ``meta`` (as in SQLite).
        """
        return prune_in_batches(
            lambda: self._delete_batch(rows_before, batch),
            lambda after: self._blank_batch(text_before, batch, after),
            batch,
        )

    def _delete_batch(self, before: float, batch: int) -> int:
        p = predictions
        with self._tx("prune failed") as conn:
            doomed = (
                sa.select(p.c.seq, p.c.id)
                .where(p.c.created_at < before)
                .order_by(p.c.created_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
                .cte("doomed")
            )
            ids = conn.execute(
                sa.delete(p).where(p.c.seq.in_(sa.select(doomed.c.seq))).returning(p.c.id)
            ).scalars()
            ids_list = list(ids)
            if ids_list:
                conn.execute(sa.delete(feedback).where(feedback.c.prediction_id.in_(ids_list)))
        return len(ids_list)

    def _blank_batch(
        self, before: float, batch: int, after: tuple[float, int] | None
    ) -> tuple[int, tuple[float, int] | None]:
        """One batch of blanking, in (created_at, seq) order from ``after`` (None: from the
        watermark); (rows blanked, the last row looked at, None when there are no more)."""
        p = predictions
        with self._tx("prune failed") as conn:
            if after is None:
                mark = conn.execute(
                    sa.select(meta.c.value).where(meta.c.key == _TEXT_WATERMARK).with_for_update()
                ).scalar()
                after = (float(mark) if mark is not None else float("-inf"), -1)
            rows = conn.execute(
                sa.select(p.c.seq, p.c.created_at)
                .where(
                    p.c.created_at >= after[0],
                    sa.or_(p.c.created_at > after[0], p.c.seq > after[1]),
                    p.c.created_at < before,
                )
                .order_by(p.c.created_at, p.c.seq)
                .limit(batch)
            ).all()
            n = 0
            last: tuple[float, int] | None = None
            if rows:
                n = conn.execute(
                    sa.update(p)
                    .where(
                        p.c.seq.in_([r.seq for r in rows]),
                        sa.or_(p.c.title != "", p.c.body != "", p.c.url.is_not(None)),
                    )
                    .values(title="", body="", url=None)
                ).rowcount
                last = (rows[-1].created_at, rows[-1].seq)
                # the next run starts at this instant
                stmt = pg_insert(meta).values(key=_TEXT_WATERMARK, value=repr(last[0]))
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["key"], set_={"value": stmt.excluded.value}
                    )
                )
        return max(n, 0), last if len(rows) == batch else None

    @contextlib.contextmanager
    def prune_lock(self) -> Iterator[bool]:
        """One pruner at a time across replicas (a session advisory lock): yields False,
        without waiting, when another process holds it."""
        try:
            conn = self.engine.connect()
        except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
            raise self._error(exc, "prune lock", rows=False) from exc
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PRUNE_LOCK})
            held = bool(got.scalar())
            conn.commit()
            yield held
        finally:
            with contextlib.suppress(Exception):
                if held:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNE_LOCK})
                    conn.commit()
            conn.close()

    # -- readers ------------------------------------------------------------------------------

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame:
        """As :meth:`store.sqlite.SQLiteStore.features` (same columns and dtypes)."""
        cols = ", ".join(f"p.{c}" for c in FEATURE_COLUMNS)
        query = sa.text(
            f"SELECT p.seq, p.created_at, p.model_version, {cols}, f.n_tags AS n_feedback_tags, "
            "f.n_unknown_tags AS n_unknown_feedback_tags FROM predictions p "
            "LEFT JOIN feedback f ON f.prediction_id = p.id "
            "WHERE p.created_at >= :start AND p.created_at < :end AND p.seq > :after "
            "ORDER BY p.seq"
        )
        with self._read() as conn:
            df = pd.read_sql_query(
                query, conn, params={"start": start, "end": end, "after": after_seq}
            )
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        return df

    def problematic(self, since: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
        """The latest problematic results: worst Jaccard with feedback, empty, most OOV."""
        base = (
            "SELECT p.id, p.created_at, p.title, p.url, p.tags, p.oov_ratio, p.max_score, "
            "f.tags AS feedback_tags, f.jaccard, f.coverage FROM predictions p "
            "LEFT JOIN feedback f ON f.prediction_id = p.id WHERE p.created_at >= :since "
        )
        queries = {
            "lowest_jaccard": base + "AND f.jaccard IS NOT NULL "
            "ORDER BY f.jaccard ASC, p.created_at DESC LIMIT :limit",
            "empty_predictions": base + "AND p.n_predicted_tags = 0 "
            "ORDER BY p.created_at DESC LIMIT :limit",
            "highest_oov": base + "ORDER BY p.oov_ratio DESC, p.created_at DESC LIMIT :limit",
        }
        out: dict[str, list[dict[str, Any]]] = {}
        with self._read() as conn:
            for name, q in queries.items():
                rows = []
                for row in conn.execute(sa.text(q), {"since": since, "limit": limit}):
                    d = dict(row._mapping)
                    d["tags"] = json.loads(d["tags"])
                    d["feedback_tags"] = (
                        json.loads(d["feedback_tags"]) if d["feedback_tags"] else None
                    )
                    rows.append(d)
                out[name] = rows
        return out

    def labelled(self, since: float, until: float) -> pd.DataFrame:
        """As :meth:`store.sqlite.SQLiteStore.labelled`: the retraining data."""
        query = sa.text(
            "SELECT p.created_at, p.title, p.body, f.tags, p.tags AS predicted, "
            "p.model_version, f.jaccard, f.coverage, f.source FROM predictions p "
            "JOIN feedback f ON f.prediction_id = p.id "
            "WHERE p.created_at >= :since AND p.created_at < :until "
            "ORDER BY p.created_at, p.seq"
        )
        with self._read() as conn:
            df = pd.read_sql_query(query, conn, params={"since": since, "until": until})
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        df["tags"] = [json.loads(t) for t in df["tags"]]
        df["predicted"] = [json.loads(t) for t in df["predicted"]]
        return df

    def texts(self, start: float, end: float, limit: int) -> pd.DataFrame:
        """As :meth:`store.records.PredictionStore.texts`."""
        where = "p.created_at >= :start AND p.created_at < :end"
        query = sa.text(
            "SELECT p.title, p.url, p.model_version, f.tags AS feedback_tags FROM predictions p "
            f"LEFT JOIN feedback f ON f.prediction_id = p.id WHERE {where} "
            "AND p.seq % :stride = 0 ORDER BY p.seq LIMIT :limit"
        )
        params: dict[str, Any] = {"start": start, "end": end}
        with self._read() as conn:
            n = conn.execute(
                sa.text(f"SELECT COUNT(*) FROM predictions p WHERE {where}"), params
            ).scalar()
            params |= {"stride": max(1, int(n or 0) // max(limit, 1)), "limit": limit}
            df = pd.read_sql_query(query, conn, params=params)
        return texts_frame(df)

    def count_labelled(self, since: float, until: float) -> int:
        """As :meth:`labelled`'s row count, in one query."""
        query = sa.text(
            "SELECT COUNT(*) FROM predictions p JOIN feedback f ON f.prediction_id = p.id "
            "WHERE p.created_at >= :since AND p.created_at < :until"
        )
        with self._read() as conn:
            return int(conn.execute(query, {"since": since, "until": until}).scalar() or 0)

    def tag_counts(
        self, since: float, until: float, vocabulary: Sequence[str]
    ) -> dict[str, TagCounts]:
        """As :meth:`store.records.PredictionStore.tag_counts` (json_array_elements_text)."""
        params = tagcounts.counts_params(since, until, vocabulary)
        with self._read() as conn:
            rows = conn.execute(sa.text(tagcounts.counts_sql("postgresql")), params).all()
        return tagcounts.counts_of(rows, vocabulary)

    def tag_examples(
        self, tag: str, since: float, until: float, limit: int = 3
    ) -> list[dict[str, Any]]:
        """As :meth:`store.records.PredictionStore.tag_examples`."""
        params = tagcounts.examples_params(tag, since, until, limit)
        with self._read() as conn:
            rows = conn.execute(sa.text(tagcounts.examples_sql("postgresql")), params).all()
        return tagcounts.examples_of(rows)


def _is_row_refusal(exc: BaseException, orig: BaseException) -> bool:
    """The rows themselves are refused (retrying them cannot succeed), not the store."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    # psycopg refuses some values before sending them: NUL in a text (PostgreSQL cannot store
    # it), a lone surrogate (not encodable in UTF-8)
    return isinstance(orig, psycopg.DataError | ValueError | TypeError | OverflowError)
