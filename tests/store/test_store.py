"""The SQLite store and its write-behind queue."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from store import (
    FeedbackRecord,
    PredictionRecord,
    SQLiteStore,
    StoreError,
    WriteBehindStore,
    open_store,
)

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
    with pytest.raises(StoreError, match="unsupported store URL scheme: 'postgresql'"):
        open_store("postgresql://localhost/x")
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
    inner = SQLiteStore(tmp_path / "s.db")
    errors: list[Exception] = []
    store = WriteBehindStore(inner, on_error=errors.append, max_backoff_seconds=0.1)
    inner._conn().execute("PRAGMA query_only=ON")  # this thread's view; the writer has its own
    import sqlite3

    blocker = sqlite3.connect(tmp_path / "s.db")
    blocker.execute("BEGIN EXCLUSIVE")  # hold the write lock: the writer cannot commit
    inner.timeout_seconds = 0.05
    store.inner = SQLiteStore(tmp_path / "s.db", timeout_seconds=0.05)
    r = record()
    store.save_prediction(r)
    time.sleep(0.5)
    assert errors, "the failing write is reported"
    assert store.pending == 1
    blocker.rollback()
    blocker.close()
    assert store.flush(timeout=5)
    assert SQLiteStore(tmp_path / "s.db").get_prediction(r.id) is not None
    store.close()


def test_feedback_for_a_queued_prediction_waits_for_its_write(tmp_path: Path) -> None:
    store = WriteBehindStore(SQLiteStore(tmp_path / "s.db"))
    r = record()
    store.save_prediction(r)
    assert store.save_feedback(FeedbackRecord(r.id, ["python"], 1.0, 1.0, 0)) is True
    store.close()


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
