"""One retrain at a time across processes, and at most one per N minutes whatever started it.

A retrain runs holding the store's retrain lock: a lock file beside a SQLite store
(``<file>-retrain.lock``, ``flock``), a session advisory lock on PostgreSQL, so that the CLI
(``python -m lifecycle retrain``), the service and another replica never fit together. Under the
lock the start of the last retrain that counted is read and written (``<file>-retrain.json``
beside a SQLite store; the ``meta`` table of a PostgreSQL one): a retrain started sooner than
``TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES`` after it is refused, and a retrain stopped before any
fit (too little data, suspicious feedback) puts the previous value back, so that it neither
throttles the next one nor resets the webhook's debounce (which reads the same value).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lifecycle.settings import LifecycleSettings
from store import StoreError

log = logging.getLogger("lifecycle.lock")

# PostgreSQL advisory lock keys of tagwatch: "tagwatch" in ASCII (store/sql.py: + 0 migration,
# + 1 pruner, + 2 inserts); + 3 is the retrain's
RETRAIN_LOCK_KEY = 0x7461677761746368 + 3
META_KEY = "lifecycle_last_retrain"


@dataclass(frozen=True)
class LastRetrain:
    """The last retrain that counted (it got past the data checks, or is running)."""

    started_at: float
    source: str

    def as_json(self) -> str:
        return json.dumps({"started_at": self.started_at, "source": self.source})

    @classmethod
    def from_json(cls, text: str) -> LastRetrain | None:
        try:
            d = json.loads(text)
            return cls(float(d["started_at"]), str(d.get("source", "")))
        except (ValueError, TypeError, KeyError):
            return None


class Slot(Protocol):
    """Where a store keeps the retrain lock and the last retrain's start."""

    def try_lock(self) -> bool: ...

    def unlock(self) -> None: ...

    def read(self) -> LastRetrain | None: ...

    def write(self, last: LastRetrain | None) -> None: ...


def sqlite_path(store_url: str) -> Path | None:
    """The file of a SQLite store URL (None: not a file, e.g. in memory or PostgreSQL)."""
    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
    elif "://" in store_url or store_url.startswith("sqlite:"):
        return None
    else:
        path = Path(store_url)
    if not path.name or path.name.startswith(":memory:") or "mode=memory" in store_url:
        return None
    return path


class FileSlot:
    """A SQLite store's slot: ``flock`` on a lock file, the state in a JSON file beside it."""

    def __init__(self, base: Path) -> None:
        self.lock_path = base.with_name(base.name + "-retrain.lock")
        self.state_path = base.with_name(base.name + "-retrain.json")
        self._fd: int | None = None

    def try_lock(self) -> bool:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"retrain lock: cannot open {self.lock_path} ({exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def read(self) -> LastRetrain | None:
        try:
            return LastRetrain.from_json(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read %s: %s", self.state_path, exc)
            return None

    def write(self, last: LastRetrain | None) -> None:
        if last is None:
            self.state_path.unlink(missing_ok=True)
            return
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        try:
            tmp.write_text(last.as_json(), encoding="utf-8")
            os.replace(tmp, self.state_path)  # readers never see half a file
        except OSError as exc:
            raise StoreError(f"retrain lock: cannot write {self.state_path} ({exc})") from exc


class PostgresSlot:
    """A PostgreSQL store's slot: a session advisory lock, the state in the ``meta`` table."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        from store.sql import engine_url

        self._sa = sa
        self.engine = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
        self._conn: Any = None

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._sa.exc.SQLAlchemyError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise StoreError(f"retrain lock: {what} ({first})") from exc

    def try_lock(self) -> bool:
        with self._errors("locking"):
            conn = self.engine.connect()
            got = conn.execute(
                self._sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": RETRAIN_LOCK_KEY}
            ).scalar()
            conn.commit()
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def unlock(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):  # closing the session releases it anyway
            self._conn.execute(
                self._sa.text("SELECT pg_advisory_unlock(:k)"), {"k": RETRAIN_LOCK_KEY}
            )
            self._conn.commit()
        self._conn.close()
        self._conn = None
        self.engine.dispose()

    def read(self) -> LastRetrain | None:
        try:
            with self.engine.connect() as conn:
                value = conn.execute(
                    self._sa.text("SELECT value FROM meta WHERE key = :k"), {"k": META_KEY}
                ).scalar()
        except self._sa.exc.SQLAlchemyError as exc:
            log.warning("cannot read the last retrain's start: %s", str(exc).splitlines()[0])
            return None
        return None if value is None else LastRetrain.from_json(str(value))

    def write(self, last: LastRetrain | None) -> None:
        sql = (
            "DELETE FROM meta WHERE key = :k"
            if last is None
            else "INSERT INTO meta (key, value) VALUES (:k, :v) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )
        with self._errors("recording the start"), self.engine.begin() as conn:
            conn.execute(self._sa.text(sql), {"k": META_KEY, "v": last.as_json() if last else None})


def slot_for(settings: LifecycleSettings) -> Slot:
    url = settings.store_url
    if url.startswith(("postgresql://", "postgresql+psycopg://")):
        return PostgresSlot(url)
    path = sqlite_path(url)
    # a store without a file (in memory): the lock lives with the models this host writes
    return FileSlot(path if path is not None else Path(settings.models_dir) / "store")


def throttle_wait(last: LastRetrain | None, min_interval_minutes: float, now: float) -> float:
    """Seconds until a retrain may start after ``last`` (0: now)."""
    if last is None or min_interval_minutes <= 0:
        return 0.0
    return max(0.0, last.started_at + min_interval_minutes * 60.0 - now)


def throttle_reason(last: LastRetrain, min_interval_minutes: float, now: float) -> str:
    wait = throttle_wait(last, min_interval_minutes, now)
    return (
        f"the last retrain ({last.source}) started {now - last.started_at:.0f} s ago; at most "
        f"one per {min_interval_minutes:g} min (TAGWATCH_RETRAIN_MIN_INTERVAL_MINUTES): next "
        f"allowed in {wait:.0f} s"
    )


@dataclass
class Admission:
    """Whether this retrain may run; ``counts`` = False (set by the caller) gives the slot back."""

    admitted: bool
    reason: str = ""
    previous: LastRetrain | None = None
    counts: bool = True


BUSY_REASON = "another retrain is running (the retrain lock is taken)"


@contextlib.contextmanager
def admit(
    settings: LifecycleSettings, source: str, now: float | None = None
) -> Iterator[Admission]:
    """Take the retrain lock and the interval's slot for the block, or say why not (no wait).

    Raises :class:`store.StoreError` when the lock itself cannot be reached (PostgreSQL down).
    """
    slot = slot_for(settings)
    if not slot.try_lock():
        yield Admission(False, BUSY_REASON)
        return
    try:
        now = time.time() if now is None else now
        previous = slot.read()
        minutes = settings.retrain_min_interval_minutes
        if previous is not None and throttle_wait(previous, minutes, now) > 0:
            yield Admission(False, throttle_reason(previous, minutes, now), previous)
            return
        slot.write(LastRetrain(now, source))
        admission = Admission(True, previous=previous)
        yield admission
        if not admission.counts:
            slot.write(previous)
    finally:
        slot.unlock()


def last_retrain(settings: LifecycleSettings) -> LastRetrain | None:
    """The last retrain that counted, read without the lock (the webhook's debounce)."""
    slot = slot_for(settings)
    try:
        return slot.read()
    finally:
        if isinstance(slot, PostgresSlot):
            slot.engine.dispose()
