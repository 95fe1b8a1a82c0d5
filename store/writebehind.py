"""Batched writes in front of a store, with a per-process spool so no acknowledged row is lost.

The predictor's hot path pays a few µs a row (a spool line + a queue entry), not a commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

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
    minted_at,
)
from tagger.tagquality import TagCounts

log = logging.getLogger("store")
SPOOL_SUFFIX = ".spool"
DEAD_LETTER_FILE = "dead-letter.jsonl"
# the writer thread looks at the queue this often (or at the policy's delay, if shorter)
WRITER_TICK_SECONDS = 0.05
# a read that misses looks in the other live workers' spools for an id minted this recently
# (a healthy writer's rows wait there a fraction of a second; older ids are not in flight)
LIVE_SPOOL_SECONDS = 60.0
_ROW_ERRORS = (RowRejected, ValueError, TypeError)


def encode_record(r: PredictionRecord) -> bytes:
    """One spool line (JSON; a lone surrogate is escaped, never an encoding error)."""
    fields = [r.id, r.created_at, r.title, r.body, r.url, r.tags, r.scores,
              r.inference_seconds, r.model_version, r.features]  # fmt: skip
    return dumps(fields) + b"\n"  # no raw newline: JSON escapes it inside strings


def decode_record(line: bytes) -> PredictionRecord:
    f = json.loads(line)
    return PredictionRecord(
        id=f[0], created_at=f[1], title=f[2], body=f[3], url=f[4], tags=f[5], scores=f[6],
        inference_seconds=f[7], model_version=f[8], features=f[9],
    )  # fmt: skip


class WriteBehindStore:
    """Predictions are spooled, queued and written in batches, many rows per transaction.

    Durability: before ``save_prediction`` returns (before the HTTP 200), the row is appended
    to this process's spool file (``spool_dir/<pid>-<ns>.spool``, one ``write(2)``, in the OS
    page cache: it survives a crash or SIGKILL of the process, not a power loss). The spool is
    truncated whenever the queue is fully written. A spool whose owner died (its ``flock`` is
    free) is replayed into the database by any live process, idempotently (``INSERT OR
    IGNORE`` by id): at start, every second, and when a read misses.

    Batching follows the store's :class:`BatchPolicy` (or ``batch_policy``): a commit per
    request costs ~40–100 µs, more than the model. The request that fills a batch writes it
    while the store is healthy (when the policy allows); a background thread writes quieter
    traffic after the policy's delay and does every retry while the store fails, so a
    failing store never stalls a request (request threads use a short lock wait, the writer a
    longer one).

    Faults: a batch the database refuses because of one row (:class:`RowRejected`) is retried
    row by row and the refused rows go to ``spool_dir/dead-letter.jsonl`` (counted, logged),
    never blocking the others. Any other failure keeps the rows queued (and spooled), retried
    with backoff up to ``max_backoff_seconds``, reported to ``on_error``, and every connection
    is reopened. With ``opener`` instead of ``inner``, a store that cannot be opened at boot
    is retried the same way. :meth:`problem` says why writes are not succeeding now.
    """

    def __init__(
        self,
        inner: PredictionStore | None = None,
        on_error: Callable[[Exception], None] | None = None,
        max_backoff_seconds: float = 2.0,
        max_pending: int = 200_000,
        *,
        opener: Callable[[], PredictionStore] | None = None,
        spool_dir: Path | None = None,
        on_dead_letter: Callable[[int], None] | None = None,
        on_recovered: Callable[[int], None] | None = None,
        on_backlog: Callable[[int, float], None] | None = None,
        stale_seconds: float = 5.0,
        writer_busy_timeout_seconds: float = 1.0,
        feedback_scorer: Scorer | None = None,
        feedback_pending_seconds: float = 3600.0,
        on_feedback: Callable[[list[ResolvedFeedback], int], None] | None = None,
        retention: Callable[[PredictionStore], object] | None = None,
        retention_interval_seconds: float = 3600.0,
        batch_policy: BatchPolicy | None = None,
    ) -> None:
        if inner is None and opener is None:
            raise ValueError("WriteBehindStore needs a store or an opener")
        self.inner = inner
        self.on_error = on_error
        self.on_dead_letter = on_dead_letter
        self.on_recovered = on_recovered
        self.on_backlog = on_backlog
        self.batch_policy = batch_policy  # None: the store's own
        self.max_backoff_seconds = max_backoff_seconds
        self.max_pending = max_pending
        self.stale_seconds = stale_seconds
        self.writer_busy_timeout_seconds = writer_busy_timeout_seconds
        # pending feedback (another replica's prediction) resolved by the housekeeping
        self.feedback_scorer = feedback_scorer
        self.feedback_pending_seconds = feedback_pending_seconds
        self.on_feedback = on_feedback
        # retention (store/retention.py) on its own thread, at most every interval
        self.retention = retention
        self.retention_interval_seconds = retention_interval_seconds
        self._retention_thread: threading.Thread | None = None
        self._next_retention = 0.0
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.dead_letters = 0
        self.recovered = 0
        self._opener = opener
        self._open_error: str | None = None
        self._pending: dict[str, PredictionRecord] = {}
        self._inflight: dict[str, PredictionRecord] = {}
        self._pending_since = 0.0
        self._inflight_since = 0.0
        self._lock = threading.RLock()  # the queue and the spool: held for µs only
        self._write_lock = threading.Lock()  # one database write at a time
        self._retry_at = 0.0
        self._backoff = 0.0
        self._fast_path_after = 0.0
        self._failing: str | None = None
        self._closed = False
        self._spool_fd: int | None = None
        self._spool_path: Path | None = None
        self._spool_overflowed = False
        self._spool_error_logged = False
        if self.inner is None:
            self._try_open()
        self._open_spool()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # -- the hot path -------------------------------------------------------------------------

    def save_prediction(self, record: PredictionRecord) -> None:
        line = encode_record(record) if self.spool_dir is not None else b""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            if self._spool_fd is not None:
                self._append_spool(line)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending[record.id] = record
            n = len(self._pending)
            if n > self.max_pending:
                self._drop_overflow()
        policy = self._policy()
        if (
            n >= policy.max_rows
            and policy.on_request_thread
            and self._failing is None
            and self.inner is not None
            and time.monotonic() >= self._fast_path_after
            and self._write_lock.acquire(blocking=False)
        ):
            try:
                if not self._write_batch(report=False):
                    # leave the retries to the writer thread (longer lock wait, backoff)
                    self._fast_path_after = time.monotonic() + 1.0
            finally:
                self._write_lock.release()

    def save_predictions(self, records: Sequence[PredictionRecord]) -> None:
        for r in records:
            self.save_prediction(r)

    def _append_spool(self, line: bytes) -> None:
        assert self._spool_fd is not None
        try:
            os.write(self._spool_fd, line)
        except OSError as exc:  # disk full, I/O error: the row is still queued in memory
            self._close_spool_locked()
            self._report(StoreError(f"spool write failed, rows kept in memory only: {exc}"))

    def _drop_overflow(self) -> None:
        """Bounded memory while the store is down; the rows stay in the spool file, which is
        then handed over to recovery instead of being truncated."""
        over = len(self._pending) - self.max_pending
        for key in list(self._pending)[:over]:
            del self._pending[key]
        self._spool_overflowed = True
        kept = "kept in the spool" if self._spool_fd is not None else "LOST (no spool)"
        self._report(StoreError(f"queue over {self.max_pending} rows: {over} oldest {kept}"))

    # -- writing ------------------------------------------------------------------------------

    def _write_batch(self, report: bool = True) -> bool:
        """Write every queued row (caller holds ``_write_lock``); False (rows kept) on a fault."""
        inner = self.inner
        if inner is None:
            return False
        with self._lock:
            if not self._pending:
                return True
            batch, self._pending = self._pending, {}
            self._inflight, self._inflight_since = batch, self._pending_since
        try:
            self._save_isolating(inner, list(batch.values()))
            if getattr(inner, "replaced", lambda: False)():
                # committed to a file no longer at the store's path: write them again
                raise StoreError("the store file was replaced or removed; reopening it")
        except Exception as exc:
            with self._lock:
                self._pending = {**batch, **self._pending}
                self._pending_since = self._inflight_since
                self._inflight = {}
            with contextlib.suppress(Exception):
                getattr(inner, "invalidate", lambda: None)()
            if report:
                self._fail(exc)
            return False
        with self._lock:
            self._inflight = {}
            if not self._pending and self._spool_fd is not None:
                if self._spool_overflowed:  # rows dropped from memory: hand the file over
                    self._close_spool_locked()
                    self._spool_overflowed = False
                    self._open_spool_locked()
                else:
                    try:
                        os.ftruncate(self._spool_fd, 0)
                    except OSError as exc:
                        log.warning("spool not truncated (replay is idempotent): %s", exc)
        self._failing = None
        self._backoff = 0.0
        self._retry_at = 0.0
        return True

    def _save_isolating(self, inner: PredictionStore, rows: list[PredictionRecord]) -> None:
        """Write ``rows``; rows the database refuses are retried alone, then dead-lettered.
        A store fault propagates (nothing dead-lettered for it)."""
        try:
            inner.save_predictions(rows)
            return
        except _ROW_ERRORS as exc:
            if len(rows) == 1:
                self._dead_letter(rows[0], exc)
                return
        for r in rows:
            try:
                inner.save_predictions([r])
            except _ROW_ERRORS as exc:
                self._dead_letter(r, exc)

    def _dead_letter(self, record: PredictionRecord, exc: BaseException) -> None:
        self._dead_letter_line(encode_record(record), exc)

    def _dead_letter_line(self, line: bytes, exc: BaseException) -> None:
        entry = json.dumps({"error": f"{type(exc).__name__}: {exc}", "at": time.time()})
        text = entry[:-1].encode() + b',"row":' + line.rstrip(b"\n") + b"}\n"
        where = "the log (no spool directory)"
        if self.spool_dir is not None:
            path = self.spool_dir / DEAD_LETTER_FILE
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, text)
                    where = str(path)
                finally:
                    os.close(fd)
            except OSError as err:
                where = f"the log ({path}: {err})"
        if where.startswith("the log"):
            log.error("store: dead-lettered row: %s", text.decode("ascii", "replace").strip())
        log.error("store: a row was refused by the database (%s); set aside in %s", exc, where)
        self.dead_letters += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter(1)

    def _fail(self, exc: Exception) -> None:
        self._failing = str(exc) or type(exc).__name__
        self._backoff = min(max(self._backoff * 2, 0.05), self.max_backoff_seconds)
        self._retry_at = time.monotonic() + self._backoff
        self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:  # a callback must not break the writer
                log.exception("store: on_error failed")
        else:
            log.error("store: %s", exc)

    def _try_open(self) -> None:
        assert self._opener is not None
        try:
            inner = self._opener()
        except Exception as exc:
            self._open_error = str(exc)
            self._fail(StoreError(f"store not opened, retrying: {exc}"))
            return
        self._open_error = None
        self._failing = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self.inner = inner
        log.info("store: opened")

    # -- the spool ----------------------------------------------------------------------------

    def _open_spool(self) -> None:
        with self._lock:
            self._open_spool_locked()

    def _open_spool_locked(self) -> None:
        if self.spool_dir is None or self._spool_fd is not None or self._closed:
            return
        path = self.spool_dir / f"{os.getpid()}-{time.time_ns()}{SPOOL_SUFFIX}"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        except OSError as exc:
            if not self._spool_error_logged:
                log.error("store: no spool (%s): queued rows are only in memory", exc)
                self._spool_error_logged = True
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: not an orphan
        try:  # rows queued while there was no spool
            for r in (*self._inflight.values(), *self._pending.values()):
                os.write(fd, encode_record(r))
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            log.error("store: spool not written (%s)", exc)
            return
        self._spool_fd, self._spool_path = fd, path
        self._spool_error_logged = False

    def _close_spool_locked(self, unlink: bool = False) -> None:
        """Release the spool: its file (if not unlinked) becomes an orphan, replayed later."""
        if self._spool_fd is None:
            return
        if unlink and self._spool_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._spool_path)
        with contextlib.suppress(OSError):
            os.close(self._spool_fd)
        self._spool_fd = self._spool_path = None

    def recover_orphans(self) -> int:
        """Replay the spools of dead processes into the store; the number of rows replayed.

        Caller holds ``_write_lock``. A spool is an orphan when nobody holds its ``flock``.
        """
        inner = self.inner
        if inner is None:
            return 0
        total = 0
        for path in self._other_spools():
            name = path.name
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive
                with contextlib.suppress(OSError):
                    if os.fstat(fd).st_ino != os.stat(path).st_ino:
                        continue  # replayed and removed by another process meanwhile
                with os.fdopen(os.dup(fd), "rb") as f:
                    lines = f.read().splitlines()
                records: dict[str, PredictionRecord] = {}
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        r = decode_record(line)
                        records[r.id] = r
                    except (ValueError, IndexError, TypeError) as exc:  # a torn last line
                        self._dead_letter_line(line.decode("ascii", "replace").encode(), exc)
                rows = list(records.values())
                for i in range(0, len(rows), 500):
                    self._save_isolating(inner, rows[i : i + 500])
                os.unlink(path)
                total += len(rows)
                log.warning("store: replayed %d rows from the spool of a dead worker (%s)",
                            len(rows), name)  # fmt: skip
            except OSError:
                continue
            except Exception as exc:  # a store fault: keep the file, retry later
                self._fail(exc)
                break
            finally:
                os.close(fd)
        if total:
            self.recovered += total
            if self.on_recovered is not None:
                self.on_recovered(total)
        return total

    def _other_spools(self) -> list[Path]:
        """The spool files of this folder's other processes, live or dead, in name order."""
        if self.spool_dir is None:
            return []
        own = self._spool_path.name if self._spool_path is not None else None
        try:
            names = sorted(os.listdir(self.spool_dir))
        except OSError:
            return []
        return [self.spool_dir / n for n in names if n.endswith(SPOOL_SUFFIX) and n != own]

    def _has_orphans(self) -> bool:
        """Whether another process's spool is free of its ``flock`` (its owner died): the
        live workers' spools do not count, so a read miss waits for no replay lock then."""
        for path in self._other_spools():
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True  # released at close: recover_orphans takes it again
            except OSError:
                continue  # held: its process is alive
            finally:
                os.close(fd)
        return False

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        configured: object = None
        next_housekeeping = 0.0
        next_backlog = 0.0
        while not self._stop.wait(min(WRITER_TICK_SECONDS, self._policy().max_delay_seconds)):
            try:
                now = time.monotonic()
                if self.inner is None and now >= self._retry_at:
                    with self._write_lock:
                        self._try_open()
                if self.inner is not None and configured is not self.inner:
                    configured = self.inner
                    set_timeout = getattr(self.inner, "set_busy_timeout", None)
                    if set_timeout is not None:
                        set_timeout(self.writer_busy_timeout_seconds)
                if now >= next_backlog and self.on_backlog is not None:
                    next_backlog = now + 0.25
                    self.on_backlog(*self.backlog())
                if self.inner is None:
                    continue
                if now >= next_housekeeping:
                    next_housekeeping = now + 1.0
                    self._housekeeping()
                policy = self._policy()
                with self._lock:
                    due = (
                        bool(self._pending)
                        and now >= self._retry_at
                        and (
                            now - self._pending_since >= policy.max_delay_seconds
                            or len(self._pending) >= policy.max_rows
                        )
                    )
                if due:
                    with self._write_lock:
                        self._write_batch()
            except Exception:  # the writer must outlive any surprise
                log.exception("store: writer thread error")

    def _policy(self) -> BatchPolicy:
        own: BatchPolicy = getattr(self.inner, "batch_policy", LOCAL_BATCHES)
        return self.batch_policy or own

    def _housekeeping(self) -> None:
        inner = self.inner
        if inner is not None and getattr(inner, "replaced", lambda: False)():
            getattr(inner, "invalidate", lambda: None)()
            self._fail(StoreError("the store file was replaced or removed; reopening it"))
        if self._spool_fd is None:
            self._open_spool()
        if time.monotonic() >= self._retry_at and self._has_orphans():
            with self._write_lock:
                self.recover_orphans()
        if inner is not None and time.monotonic() >= self._retry_at:
            self._resolve_pending_feedback(inner)
            self._start_retention(inner)

    def _resolve_pending_feedback(self, inner: PredictionStore) -> None:
        """Feedback other processes took for predictions they could not see yet: stored and
        counted once its prediction arrived (in the store's transaction: each counted once
        across processes), dropped and counted once its window passed without one."""
        if self.feedback_scorer is None:
            return
        expire_before = time.time() - self.feedback_pending_seconds
        try:
            stored, expired = inner.resolve_pending_feedback(self.feedback_scorer, expire_before)
        except Exception as exc:  # the next housekeeping tries again
            self._report(StoreError(f"pending feedback not resolved: {exc}"))
            return
        if (stored or expired) and self.on_feedback is not None:
            try:
                self.on_feedback(stored, expired)
            except Exception:
                log.exception("store: on_feedback failed")

    def _start_retention(self, inner: PredictionStore) -> None:
        """Retention on its own thread: its batches must never delay this writer's."""
        if self.retention is None or time.monotonic() < self._next_retention:
            return
        if self._retention_thread is not None and self._retention_thread.is_alive():
            return
        self._next_retention = time.monotonic() + self.retention_interval_seconds
        retention = self.retention

        def run() -> None:
            try:
                retention(inner)
            except Exception as exc:
                self._report(StoreError(f"retention failed: {exc}"))

        self._retention_thread = threading.Thread(target=run, name="store-retention", daemon=True)
        self._retention_thread.start()

    # -- state --------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._inflight)

    def backlog(self) -> tuple[int, float]:
        """Rows not yet written, and the age in seconds of the oldest of them (0 when none)."""
        with self._lock:
            n = len(self._pending) + len(self._inflight)
            since = [
                t
                for t, d in (
                    (self._inflight_since, self._inflight),
                    (self._pending_since, self._pending),
                )
                if d
            ]
        return n, (time.monotonic() - min(since)) if since else 0.0

    def problem(self) -> str | None:
        """Why writes do not succeed now (the real outcome of recent writes), or None."""
        if self.inner is None:
            return f"store not open: {self._open_error}"
        if self._failing is not None:
            return f"writes failing: {self._failing}"
        n, age = self.backlog()
        if age > self.stale_seconds:
            return f"{n} rows queued, the oldest for {age:.0f} s"
        return None

    def flush(self, timeout: float = 10.0) -> bool:
        """Write every queued row now; False if that could not be done in time."""
        deadline = time.monotonic() + timeout
        while True:
            with self._write_lock:
                if self.inner is None and self._opener is not None:
                    self._try_open()
                if self._write_batch() and not self.pending:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    # -- reads and feedback -------------------------------------------------------------------

    def _store(self) -> PredictionStore:
        inner = self.inner
        if inner is None:
            raise StoreError(f"the store is not open: {self._open_error}")
        return inner

    def get_prediction(self, prediction_id: str) -> PredictionRecord | None:
        with self._lock:
            queued = self._pending.get(prediction_id) or self._inflight.get(prediction_id)
        if queued is not None:
            return queued
        inner = self._store()
        found = inner.get_prediction(prediction_id)
        if found is None and self._has_orphans() and self._write_lock.acquire(timeout=0.05):
            try:  # served by a worker that died before writing it?
                replayed = self.recover_orphans()
            finally:
                self._write_lock.release()
            if replayed:
                found = inner.get_prediction(prediction_id)
        if found is None:
            found = self._write_through(inner, prediction_id)
        return found

    def _write_through(self, inner: PredictionStore, prediction_id: str) -> PredictionRecord | None:
        """A row another live worker of this host acknowledged but has not written yet (feedback
        sent at once to another worker): read from that worker's spool and written now, so
        that its feedback can be stored (the owner's batch then skips it: writes are
        idempotent by id). None when it is nowhere (or the write lock is busy: pending)."""
        minted = minted_at(prediction_id)
        if self.spool_dir is None or minted is None or time.time() - minted > LIVE_SPOOL_SECONDS:
            return None
        if self._failing is not None:  # it could not be written now: the caller answers 503
            return None
        record = self._from_live_spools(prediction_id)
        if record is None:  # written meanwhile, its spool truncated?
            return inner.get_prediction(prediction_id)
        # a short wait: the writer thread holds the lock for ~1 ms a healthy batch, and for up
        # to its busy timeout on a locked store, when feedback must fail fast (≤ 100 ms)
        if not self._write_lock.acquire(timeout=0.01):
            return None
        try:
            inner.save_predictions([record])
        except RowRejected:  # the owner dead-letters it
            return None
        finally:
            self._write_lock.release()
        return record

    def _from_live_spools(self, prediction_id: str) -> PredictionRecord | None:
        needle = b'["' + prediction_id.encode("ascii") + b'"'
        for path in self._other_spools():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            start = data.find(needle)
            end = data.find(b"\n", start)
            if start < 0 or end < 0 or (start > 0 and data[start - 1] != 0x0A):
                continue  # absent, a torn line being appended, or not at a line start
            try:
                return decode_record(data[start:end])
            except (ValueError, IndexError, TypeError):
                continue
        return None

    def get_feedback(self, prediction_id: str) -> FeedbackRecord | None:
        return self._store().get_feedback(prediction_id)

    def save_feedback(self, feedback: FeedbackRecord) -> bool:
        """Fails fast (StoreError) while the store fails: never holds a request for long."""
        inner = self._store()
        with self._lock:
            queued = feedback.prediction_id in self._pending or (
                feedback.prediction_id in self._inflight
            )
        if queued:  # the prediction must be written before its feedback (foreign key)
            if self._failing is not None:
                raise StoreError(f"the prediction is not written yet: {self._failing}")
            if not self._write_lock.acquire(timeout=0.05):
                raise StoreError("the store is busy writing; retry")
            try:
                self._write_batch(report=False)
            finally:
                self._write_lock.release()
            with self._lock:
                if feedback.prediction_id in self._pending:
                    raise StoreError("the prediction is not written yet; the store is failing")
        return inner.save_feedback(feedback)

    def save_pending_feedback(
        self,
        prediction_id: str,
        tags: Sequence[str],
        n_unknown_tags: int,
        received_at: float,
        source: str = "unknown",
    ) -> str:
        return self._store().save_pending_feedback(
            prediction_id, tags, n_unknown_tags, received_at, source
        )

    def resolve_pending_feedback(
        self, score: Scorer, expire_before: float, limit: int = 500
    ) -> tuple[list[ResolvedFeedback], int]:
        return self._store().resolve_pending_feedback(score, expire_before, limit)

    def prune(
        self, text_before: float, rows_before: float, batch: int = PRUNE_BATCH_ROWS
    ) -> tuple[int, int]:
        return self._store().prune(text_before, rows_before, batch)

    def prune_lock(self) -> contextlib.AbstractContextManager[bool]:
        lock = getattr(self._store(), "prune_lock", None)
        return contextlib.nullcontext(True) if lock is None else lock()

    def features(self, start: float, end: float, after_seq: int = 0) -> pd.DataFrame:
        return self._store().features(start, end, after_seq)

    def problematic(self, since: float, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
        return self._store().problematic(since, limit)

    def labelled(self, since: float, until: float) -> pd.DataFrame:
        return self._store().labelled(since, until)

    def count_labelled(self, since: float, until: float) -> int:
        return self._store().count_labelled(since, until)

    def texts(self, start: float, end: float, limit: int) -> pd.DataFrame:
        return self._store().texts(start, end, limit)

    def tag_counts(
        self, since: float, until: float, vocabulary: Sequence[str]
    ) -> dict[str, TagCounts]:
        return self._store().tag_counts(since, until, vocabulary)

    def tag_examples(
        self, tag: str, since: float, until: float, limit: int = 3
    ) -> list[dict[str, Any]]:
        return self._store().tag_examples(tag, since, until, limit)

    def count(self) -> int:
        return self._store().count() + self.pending

    def check_writable(self) -> None:
        self._store().check_writable()

    def close(self) -> None:
        """Stop the writer and write what is queued (up to 10 s); what cannot be written stays
        in the spool file, replayed by the next process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join(timeout=5)
        written = self.flush(timeout=5.0)
        with self._lock:
            left = len(self._pending) + len(self._inflight)
            if left and self._spool_fd is not None:
                log.error("store: %d rows not written at exit; kept in %s for the next worker",
                          left, self._spool_path)  # fmt: skip
            elif left:
                log.error("store: %d rows not written at exit and no spool: lost", left)
            self._close_spool_locked(unlink=written and not left and not self._spool_overflowed)
        if self.inner is not None:
            self.inner.close()
