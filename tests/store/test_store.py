"""The SQLite store and its write-behind queue."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from store import (
    BatchPolicy,
    FeedbackRecord,
    PredictionRecord,
    SQLiteStore,
    StoreError,
    WriteBehindStore,
    new_prediction_id,
    open_store,
)
from store.writebehind import decode_record, encode_record

FEATURES = {
    "title_chars": 10, "body_chars": 0, "n_code_blocks": 0, "n_links": 0, "n_tokens": 2,
    "oov_ratio": 0.5, "n_predicted_tags": 1, "max_score": 0.7, "top_tag": "python",
}  # fmt: skip


def record(created_at: float = 1_600_000_000.0, **features: object) -> PredictionRecord:
    return PredictionRecord(
        id=uuid.uuid4().hex,
        created_at=created_at,
        title="python list",
        body="",
        tags=["python"],
        scores={"python": 0.7},
        inference_seconds=4e-5,
        model_version="v",
        features={**FEATURES, **features},
        url="https://stackoverflow.com/q/1",
    )


def test_roundtrip_and_feedback_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    r = record()
    store.save_prediction(r)
    assert store.get_prediction(r.id) == r
    fb = FeedbackRecord(r.id, ["python", "list"], 0.5, 0.5, n_unknown_tags=1)
    assert store.save_feedback(fb) is True
    assert store.save_feedback(fb) is False
    assert store.get_feedback(r.id).tags == ["python", "list"]
    assert store.get_prediction("missing") is None and store.get_feedback("missing") is None


def test_features_window_and_incremental_seq(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.save_predictions([record(created_at=1000.0 + i, oov_ratio=i / 10) for i in range(10)])
    df = store.features(1002.0, 1008.0)
    assert len(df) == 6 and df["oov_ratio"].tolist()[0] == pytest.approx(0.2)
    assert str(df["created_at"].dt.tz) == "UTC"
    later = store.features(0, 2000, after_seq=int(df["seq"].iloc[-1]))
    assert len(later) == 2
    assert df["n_feedback_tags"].isna().all()


def test_problematic(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    good, bad = record(created_at=10.0), record(created_at=11.0)
    empty = record(created_at=12.0, n_predicted_tags=0, top_tag="(none)", oov_ratio=1.0)
    store.save_predictions([good, bad, empty])
    store.save_feedback(FeedbackRecord(good.id, ["python"], 1.0, 1.0, 0))
    store.save_feedback(FeedbackRecord(bad.id, ["rust"], 0.0, 0.0, 1))
    out = store.problematic(since=0.0, limit=5)
    assert [r["id"] for r in out["lowest_jaccard"]] == [bad.id, good.id]
    assert [r["id"] for r in out["empty_predictions"]] == [empty.id]
    assert out["highest_oov"][0]["id"] == empty.id
    assert out["lowest_jaccard"][0]["feedback_tags"] == ["rust"]
    assert out["lowest_jaccard"][0]["url"] == "https://stackoverflow.com/q/1"


def test_rows_survive_reopen(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.save_predictions([record() for _ in range(5)])
    store.close()
    assert SQLiteStore(tmp_path / "s.db").count() == 5


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'a.db'}"), SQLiteStore)
    assert isinstance(open_store(str(tmp_path / "b.db")), SQLiteStore)
    with pytest.raises(StoreError, match="unsupported store URL scheme: 'mysql'"):
        open_store("mysql://localhost/x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open store"):
        SQLiteStore(tmp_path / "file" / "c.db")


def test_write_behind_batches_and_flushes_on_close(tmp_path: Path) -> None:
    inner = SQLiteStore(tmp_path / "s.db")
    store = WriteBehindStore(inner)
    records = [record() for _ in range(2000)]
    threads = [
        threading.Thread(target=lambda part=part: [store.save_prediction(r) for r in part])
        for part in (records[:1000], records[1000:])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_prediction(records[-1].id) is not None  # queued rows are readable
    store.close()
    assert SQLiteStore(tmp_path / "s.db").count() == 2000
    with pytest.raises(StoreError, match="closed"):
        store.save_prediction(record())


def test_write_behind_retries_failures_and_reports_them(tmp_path: Path) -> None:
    inner = SQLiteStore(tmp_path / "s.db", busy_timeout_seconds=0.02)
    errors: list[Exception] = []
    store = WriteBehindStore(
        inner, on_error=errors.append, max_backoff_seconds=0.1, writer_busy_timeout_seconds=0.05
    )
    blocker = sqlite3.connect(tmp_path / "s.db")
    blocker.execute("BEGIN EXCLUSIVE")  # hold the write lock: the writer cannot commit
    r = record()
    store.save_prediction(r)
    wait_for(lambda: bool(errors), "the failing write is reported")
    assert store.pending == 1
    assert store.problem() is not None and "locked" in store.problem()  # type: ignore[operator]
    blocker.rollback()
    blocker.close()
    wait_for(lambda: store.pending == 0 and store.problem() is None, "written after the lock")
    assert SQLiteStore(tmp_path / "s.db").get_prediction(r.id) is not None
    store.close()


def test_feedback_for_a_queued_prediction_waits_for_its_write(tmp_path: Path) -> None:
    store = WriteBehindStore(SQLiteStore(tmp_path / "s.db"))
    r = record()
    store.save_prediction(r)
    assert store.save_feedback(FeedbackRecord(r.id, ["python"], 1.0, 1.0, 0)) is True
    store.close()


def test_a_row_queued_by_another_live_worker_is_read_from_its_spool_and_written(
    tmp_path: Path,
) -> None:
    """Two workers of one host: feedback sent at once to the worker that did not serve the
    prediction finds the row in the other's spool (no 202, no wait for its batch)."""
    db, spool = tmp_path / "s.db", tmp_path / "spool"
    slow = BatchPolicy(max_rows=10_000, max_delay_seconds=3600, on_request_thread=True)
    a = WriteBehindStore(SQLiteStore(db), spool_dir=spool, batch_policy=slow)
    b = WriteBehindStore(SQLiteStore(db), spool_dir=spool, batch_policy=slow)
    rows = [replace(record(time.time()), id=new_prediction_id()) for _ in range(5)]
    for r in rows:
        a.save_prediction(r)
    reader = SQLiteStore(db, readonly=True)
    assert reader.count() == 0  # nothing written yet: all queued in a (and its spool)
    assert b.get_prediction(rows[2].id) == rows[2]
    assert reader.get_prediction(rows[2].id) == rows[2]  # written through by b
    assert b.save_feedback(FeedbackRecord(rows[2].id, ["python"], 1.0, 1.0, 0)) is True
    old = "0" * 16 + "1" * 16  # minted in 1970: never looked for in the spools
    assert b.get_prediction(old) is None
    assert a.flush(timeout=5) and reader.count() == 5  # a's batch skips the row b wrote
    assert b.get_feedback(rows[2].id) is not None
    a.close()
    b.close()
    reader.close()


def _open_after(barrier: Any, path: Path, results: Any) -> None:
    barrier.wait()
    try:
        SQLiteStore(path)
        results.put("ok")
    except StoreError as exc:
        results.put(str(exc))


def test_workers_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    """gunicorn workers create the database at the same instant: none may lose its store."""
    ctx = multiprocessing.get_context("fork")
    for run in range(8):
        path = tmp_path / f"s{run}.db"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_after, args=(barrier, path, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.02)


def test_a_refused_row_is_dead_lettered_and_never_blocks_the_others(tmp_path: Path) -> None:
    """A lone surrogate cannot be encoded for SQLite: that row goes aside, the batch lands."""
    dead: list[int] = []
    store = WriteBehindStore(
        SQLiteStore(tmp_path / "s.db"), spool_dir=tmp_path / "spool", on_dead_letter=dead.append
    )
    good = [record() for _ in range(200)]
    poison = record()
    poison.title = "python \ud800"
    for r in [*good[:100], poison, *good[100:]]:
        store.save_prediction(r)
    assert store.flush(timeout=5)
    reader = SQLiteStore(tmp_path / "s.db")
    assert reader.count() == 200
    assert all(reader.get_prediction(r.id) is not None for r in good)
    assert dead == [1] and store.dead_letters == 1
    lines = (tmp_path / "spool" / "dead-letter.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    assert entry["row"][0] == poison.id and "UnicodeEncodeError" in entry["error"]
    for r in [record() for _ in range(100)]:  # later traffic is written as usual
        store.save_prediction(r)
    assert store.flush(timeout=5) and reader.count() == 300
    store.close()


def _serve_then_die(spool: Path, db: Path, ids: Any, ready: Any) -> None:
    # only full batches are written: the rest stays queued (and spooled) for the test
    policy = BatchPolicy(max_rows=64, max_delay_seconds=3600, on_request_thread=True)
    store = WriteBehindStore(SQLiteStore(db), spool_dir=spool, batch_policy=policy)
    for _ in range(150):  # 2 full batches written, 22 rows only queued and spooled
        r = record()
        store.save_prediction(r)
        ids.put(r.id)
    ready.set()
    time.sleep(60)  # SIGKILLed here


def test_rows_of_a_killed_process_are_replayed_from_its_spool(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ids, ready = ctx.Queue(), ctx.Event()
    proc = ctx.Process(
        target=_serve_then_die, args=(tmp_path / "spool", tmp_path / "s.db", ids, ready)
    )
    proc.start()
    assert ready.wait(30)
    acknowledged = [ids.get(timeout=5) for _ in range(150)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert SQLiteStore(tmp_path / "s.db").count() < 150  # the queue died with the process
    recovered: list[int] = []
    store = WriteBehindStore(
        SQLiteStore(tmp_path / "s.db"), spool_dir=tmp_path / "spool", on_recovered=recovered.append
    )
    wait_for(lambda: SQLiteStore(tmp_path / "s.db").count() == 150, "the spool replayed")
    reader = SQLiteStore(tmp_path / "s.db")
    assert all(reader.get_prediction(i) is not None for i in acknowledged)
    assert sum(recovered) >= 22  # rows written before the kill may be replayed again: ignored
    assert [p.name for p in (tmp_path / "spool").glob("*.spool") if p.stat().st_size] == []
    store.close()
    assert not list((tmp_path / "spool").glob("*.spool")), "a clean exit leaves no spool"


def test_a_store_missing_at_boot_is_opened_later_and_gets_the_queued_rows(tmp_path: Path) -> None:
    blocked = tmp_path / "mnt"
    blocked.write_text("not a directory yet")
    db = blocked / "s.db"
    errors: list[Exception] = []
    store = WriteBehindStore(
        opener=lambda: SQLiteStore(db, timeout_seconds=0.1),
        on_error=errors.append,
        max_backoff_seconds=0.2,
    )
    rows = [record() for _ in range(10)]
    for r in rows:
        store.save_prediction(r)
    assert store.inner is None and store.problem() is not None
    wait_for(lambda: len(errors) >= 2, "the open is retried and each failure counted")
    with pytest.raises(StoreError):
        store.save_feedback(FeedbackRecord(rows[0].id, ["python"], 1.0, 1.0, 0))
    blocked.unlink()
    blocked.mkdir()
    wait_for(lambda: store.pending == 0 and store.problem() is None, "opened and written")
    assert SQLiteStore(db).count() == 10
    store.close()


def test_a_locked_store_never_stalls_the_caller_and_feedback_fails_fast(tmp_path: Path) -> None:
    store = WriteBehindStore(
        SQLiteStore(tmp_path / "s.db", busy_timeout_seconds=0.02),
        max_backoff_seconds=0.5,
        writer_busy_timeout_seconds=0.5,
    )
    first = record()
    store.save_prediction(first)
    assert store.flush(timeout=5)
    blocker = sqlite3.connect(tmp_path / "s.db")
    blocker.execute("BEGIN EXCLUSIVE")
    slowest = 0.0
    for _ in range(1000):
        t0 = time.perf_counter()
        store.save_prediction(record())
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05, f"a save took {slowest * 1e3:.0f} ms while the store was locked"
    wait_for(lambda: store.problem() is not None, "writes reported failing")
    queued = next(iter(store._pending))
    t0 = time.perf_counter()
    with pytest.raises(StoreError):
        store.save_feedback(FeedbackRecord(queued, ["python"], 1.0, 1.0, 0))
    assert time.perf_counter() - t0 < 0.1
    blocker.rollback()
    blocker.close()
    wait_for(lambda: store.pending == 0 and store.problem() is None, "written after the lock")
    assert SQLiteStore(tmp_path / "s.db").count() == 1001
    assert store.save_feedback(FeedbackRecord(queued, ["python"], 1.0, 1.0, 0)) is True
    store.close()


def test_a_store_file_replaced_under_the_writer_is_reopened(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = WriteBehindStore(SQLiteStore(db))
    store.save_prediction(record())
    assert store.flush(timeout=5)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"s.db{suffix}").unlink(missing_ok=True)  # e.g. a restore or a mistake
    rows = [record() for _ in range(5)]
    for r in rows:
        store.save_prediction(r)
    wait_for(lambda: SQLiteStore(db).count() == 5, "rows written into the new file")
    store.close()


def test_spool_lines_roundtrip() -> None:
    r = record()
    r.title = "python \ud800 ü"
    assert decode_record(encode_record(r)) == r


def test_an_older_sqlite_file_gets_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    """A store written before feedback had a source (issue 15) opens as it is: the columns are
    added, old feedback reads as "unknown", and a reader of the not-yet-upgraded file works."""
    db = tmp_path / "old.sqlite3"
    r = record(created_at=100.0)
    legacy = SQLiteStore(db)
    legacy.save_prediction(r)
    legacy.close()
    conn = sqlite3.connect(db)
    for table in ("feedback", "feedback_pending"):  # as written before the column existed
        conn.execute(f"ALTER TABLE {table} DROP COLUMN source")
    conn.execute(
        "INSERT INTO feedback (prediction_id, created_at, tags, coverage, jaccard, n_tags, "
        "n_unknown_tags) VALUES (?, 101.0, '[\"python\"]', 1.0, 1.0, 1, 0)",
        (r.id,),
    )
    conn.commit()
    conn.close()
    reader = SQLiteStore(db, readonly=True)
    assert list(reader.labelled(0.0, 200.0)["source"]) == ["unknown"]
    assert reader.get_feedback(r.id).source == "unknown"  # type: ignore[union-attr]
    reader.close()
    store = SQLiteStore(db)  # the predictor's open: columns added
    for table in ("feedback", "feedback_pending"):
        assert "source" in {row[1] for row in store.connection().execute(
            f"PRAGMA table_info({table})")}  # fmt: skip
    assert store.get_feedback(r.id).source == "unknown"  # type: ignore[union-attr]
    assert store.save_pending_feedback("a" * 32, ["go"], 0, time.time(), source="token") == "queued"
    store.close()


def test_signed_prediction_ids_verify_without_the_store() -> None:
    from store import id_signed_by, is_unsigned_id, minted_at

    key, other = b"k" * 32, b"o" * 32
    pid = new_prediction_id(key)
    assert len(pid) == 48 and id_signed_by(pid, key) and not id_signed_by(pid, other)
    assert abs(minted_at(pid) - time.time()) < 5  # type: ignore[operator]
    forged = pid[:32] + ("0" if pid[32] != "0" else "1") + pid[33:]
    assert not id_signed_by(forged, key)
    assert not id_signed_by(pid[:32], key) and is_unsigned_id(pid[:32])
    assert not id_signed_by(pid.upper(), key) and minted_at(pid.upper()) is None
    assert not id_signed_by("x" * 48, key) and minted_at("nope") is None
    a, b = new_prediction_id(key), new_prediction_id(key)
    assert a < b, "ids stay ordered by time"
