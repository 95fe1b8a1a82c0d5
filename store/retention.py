"""Retention: how long stored questions keep their text, and their rows.

Raw question text (title, body, url) is user data: blanked after ``TAGWATCH_RETENTION_DAYS``
(default 90). The rest of a row (features, prediction, feedback) feeds the drift job, the weekly
report and the dashboards' history: deleted after ``TAGWATCH_FEATURE_RETENTION_DAYS`` (default
400). Dated reports (drift, weekly) follow the text setting: they quote questions.

The policy is pure (:func:`cutoffs`); :func:`run_retention` applies it through the store's
``prune`` (small batches, one short transaction each, so writes never wait behind it), one
process at a time (the store's ``prune_lock``: a lock file for SQLite, an advisory lock for
PostgreSQL). The predictor runs it from its writer's housekeeping at most once an hour;
``python -m store prune`` runs it from cron.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from store.records import PRUNE_BATCH_ROWS, PRUNE_PAUSE_SECONDS, PredictionStore

log = logging.getLogger("store.retention")
DAY_SECONDS = 86_400.0
# a background pruner waits this long for a writer's lock (a request thread waits 20 ms)
PRUNE_BUSY_TIMEOUT_SECONDS = 1.0
# a day's report (weekly, older drift reports) or a drift run's (2026-03-02T020000Z.html/.json)
_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T\d{6}Z)?\.(html|txt|json)$")


@dataclass(frozen=True)
class Cutoffs:
    """Rows served before ``text_before`` lose their text; before ``rows_before``, everything.
    ``-inf``: that retention is off (0 days)."""

    text_before: float
    rows_before: float


def cutoffs(retention_days: float, feature_retention_days: float, now: float) -> Cutoffs:
    """The cut-offs (epoch seconds) for ``now``; 0 days means keep forever."""

    def before(days: float) -> float:
        return now - days * DAY_SECONDS if days > 0 else -math.inf

    return Cutoffs(before(retention_days), before(feature_retention_days))


# a position in (created_at, seq) order: where blanking resumes
Position = tuple[float, int]


def prune_in_batches(
    delete_batch: Callable[[], int],
    blank_batch: Callable[[Position | None], tuple[int, Position | None]],
    batch: int,
) -> tuple[int, int]:
    """The loop every store's ``prune`` runs: aged rows deleted, then aged text blanked, one
    short transaction per batch with a pause between, so that writers never wait long.

    ``delete_batch`` deletes up to ``batch`` rows and says how many; ``blank_batch(after)``
    blanks the next batch after ``after`` (None: from the store's watermark) and returns
    (rows blanked, where to go on, None when done). (rows blanked, rows deleted).
    """
    deleted = blanked = 0
    while True:
        n = delete_batch()
        deleted += n
        if n < batch:
            break
        time.sleep(PRUNE_PAUSE_SECONDS)
    after: Position | None = None
    while True:
        n, after = blank_batch(after)
        blanked += n
        if after is None:
            break
        time.sleep(PRUNE_PAUSE_SECONDS)
    return blanked, deleted


@dataclass(frozen=True)
class PruneResult:
    blanked: int
    deleted: int
    seconds: float


def run_retention(
    store: PredictionStore,
    retention_days: float,
    feature_retention_days: float,
    now: float | None = None,
    batch: int = PRUNE_BATCH_ROWS,
    on_pruned: Callable[[int, int], None] | None = None,
) -> PruneResult | None:
    """Prune ``store`` now; None when another process is pruning it (nothing done)."""
    c = cutoffs(retention_days, feature_retention_days, time.time() if now is None else now)
    if c.text_before == -math.inf and c.rows_before == -math.inf:
        return PruneResult(0, 0, 0.0)
    set_timeout = getattr(store, "set_busy_timeout", None)
    if set_timeout is not None:  # this thread only
        set_timeout(PRUNE_BUSY_TIMEOUT_SECONDS)
    lock = getattr(store, "prune_lock", None)
    with contextlib.nullcontext(True) if lock is None else lock() as acquired:
        if not acquired:
            log.info("retention: another process is pruning the store; skipped")
            return None
        t0 = time.monotonic()
        blanked, deleted = store.prune(c.text_before, c.rows_before, batch)
        result = PruneResult(blanked, deleted, time.monotonic() - t0)
    if blanked or deleted:
        log.info(
            "retention: %d rows blanked (text older than %s), %d rows deleted (older than %s) "
            "in %.1f s",
            blanked, _day(c.text_before), deleted, _day(c.rows_before), result.seconds,
        )  # fmt: skip
    if on_pruned is not None:
        on_pruned(blanked, deleted)
    return result


def _day(t: float) -> str:
    return "never" if t == -math.inf else time.strftime("%Y-%m-%d", time.gmtime(t))


def expired_reports(names: Iterable[str], keep_days: float, today: date) -> list[str]:
    """The dated reports (``YYYY-MM-DD.html`` / ``.txt``) older than ``keep_days`` days."""
    if keep_days <= 0:
        return []
    oldest = today - timedelta(days=keep_days)
    out = []
    for name in names:
        m = _DATED.match(name)
        if m is None:
            continue
        try:
            day = date.fromisoformat(m.group(1))
        except ValueError:
            continue
        if day < oldest:
            out.append(name)
    return sorted(out)


def prune_reports(folder: Path, keep_days: float, today: date) -> list[Path]:
    """Delete the dated reports in ``folder`` older than ``keep_days``; the paths deleted.
    Other files (latest.html, assets/) are never touched."""
    try:
        names = [p.name for p in Path(folder).iterdir() if p.is_file()]
    except OSError:
        return []
    deleted = []
    for name in expired_reports(names, keep_days, today):
        path = Path(folder) / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention: %s not deleted: %s", path, exc)
            continue
        deleted.append(path)
    if deleted:
        log.info("retention: %d dated reports older than %g days deleted from %s",
                 len(deleted), keep_days, folder)  # fmt: skip
    return deleted
