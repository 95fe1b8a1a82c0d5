"""The store contract on both backends (SQLite file, real PostgreSQL), and what only the
PostgreSQL store has: Alembic migrations under a lock, a server that goes away and comes back."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from store import (
    FeedbackRecord,
    PredictionRecord,
    RowRejected,
    SQLiteStore,
    StoreError,
    WriteBehindStore,
    open_store,
    spool_dir_for,
)
from store.schema import metadata
from store.sql import HEAD_REVISION, SQLStore, alembic_config, engine_url
from tagger.tagquality import TagCounts, count_tags
from tests.processes import REPO_ROOT, start_postgres
from tests.store.test_store import record, wait_for


def rows(n: int, start: float = 1_600_000_000.0) -> list[PredictionRecord]:
    out = []
    for i in range(n):
        r = record(created_at=start + i, oov_ratio=(i % 7) / 7, n_predicted_tags=i % 3,
                   max_score=0.3 + (i % 5) / 10)  # fmt: skip
        r.tags = ["python", "list"][: i % 3]
        out.append(r)
    return out


def test_insert_is_idempotent_and_reads_back(store_url: str) -> None:
    store = open_store(store_url)
    batch = rows(100)
    store.save_predictions(batch)
    store.save_predictions(batch[50:] + rows(10, start=1_700_000_000.0))  # a replayed spool
    assert store.count() == 110
    assert store.get_prediction(batch[7].id) == batch[7]
    assert store.get_prediction("0" * 32) is None
    assert [r.id for r in store.iter_predictions(batch=30)][:100] == [r.id for r in batch]  # type: ignore[attr-defined]
    assert store.identity() is not None  # type: ignore[attr-defined]
    store.check_writable()
    store.close()


def test_feedback_is_stored_once_even_before_its_prediction(store_url: str) -> None:
    store = open_store(store_url)
    r = record()
    store.save_prediction(r)
    fb = FeedbackRecord(r.id, ["python", "list"], 0.5, 0.5, n_unknown_tags=1, created_at=5.0)
    assert store.save_feedback(fb) is True
    assert store.save_feedback(fb) is False
    assert store.get_feedback(r.id) == fb
    assert store.get_feedback("missing") is None
    # no foreign key: feedback may arrive before another replica ships its prediction
    assert store.save_feedback(FeedbackRecord("f" * 32, ["rust"], 0.0, 0.0, 0)) is True
    store.close()


def test_pending_feedback_resolves_once_its_prediction_arrives(store_url: str) -> None:
    store = open_store(store_url)
    r = record()
    now = time.time()
    assert store.save_pending_feedback(r.id, ["python"], 0, now) == "queued"
    assert store.save_pending_feedback(r.id, ["python"], 0, now) == "duplicate"
    assert store.save_pending_feedback(r.id, ["rust"], 1, now) == "conflict"
    old = "e" * 32
    assert store.save_pending_feedback(old, ["go"], 0, now - 7200) == "queued"

    def score(predicted: Any, given: Any) -> tuple[float, float]:
        return 1.0, 0.5

    assert store.resolve_pending_feedback(score, expire_before=now - 3600) == ([], 1)
    store.save_prediction(r)
    stored, expired = store.resolve_pending_feedback(score, expire_before=now - 3600)
    assert [f.prediction_id for f in stored] == [r.id] and expired == 0
    assert store.get_feedback(r.id) == FeedbackRecord(r.id, ["python"], 1.0, 0.5, 0, now)
    assert store.save_pending_feedback(r.id, ["python"], 0, now) == "duplicate"
    assert store.resolve_pending_feedback(score, expire_before=now - 3600) == ([], 0)
    store.close()


def test_feedback_keeps_its_source_directly_and_through_pending(store_url: str) -> None:
    """Which credential sent each feedback is stored (issue 15), pending feedback included,
    and comes back in ``labelled`` (the retraining data, the weekly summary's counts)."""
    store = open_store(store_url)
    direct, later = record(created_at=1000.0), record(created_at=1001.0)
    store.save_prediction(direct)
    assert store.save_feedback(FeedbackRecord(direct.id, ["python"], 1.0, 1.0, 0, source="token"))
    assert store.get_feedback(direct.id).source == "token"  # type: ignore[union-attr]
    assert store.save_pending_feedback(later.id, ["go"], 0, time.time(), source="open") == "queued"
    store.save_prediction(later)
    stored, _ = store.resolve_pending_feedback(lambda p, g: (1.0, 1.0), expire_before=0.0)
    assert [(f.prediction_id, f.source) for f in stored] == [(later.id, "open")]
    assert store.get_feedback(later.id).source == "open"  # type: ignore[union-attr]
    labelled = store.labelled(0.0, 2000.0)
    assert list(labelled["source"]) == ["token", "open"]
    store.close()


def test_prune_blanks_text_then_deletes_rows(store_url: str) -> None:
    store = open_store(store_url)
    batch = rows(30, start=1000.0)
    store.save_predictions(batch)
    store.save_feedback(FeedbackRecord(batch[0].id, ["python"], 1.0, 1.0, 0))
    blanked, deleted = store.prune(text_before=1020.0, rows_before=1010.0, batch=4)
    assert (blanked, deleted) == (10, 10)
    assert store.count() == 20 and store.get_feedback(batch[0].id) is None
    assert store.get_prediction(batch[15].id).title == ""  # type: ignore[union-attr]
    assert store.get_prediction(batch[25].id).title == "python list"  # type: ignore[union-attr]
    assert store.prune(text_before=1020.0, rows_before=1010.0, batch=4) == (0, 0)
    store.close()


def test_a_reader_never_creates_a_store(store_url: str) -> None:
    with pytest.raises(StoreError) as err:
        open_store(store_url, readonly=True)
    message = str(err.value)
    assert "\n" not in message
    assert "no such store" in message or "no tagwatch schema" in message
    open_store(store_url).close()  # the predictor creates it
    reader = open_store(store_url, readonly=True)
    assert reader.count() == 0 and reader.identity() is not None  # type: ignore[attr-defined]
    if isinstance(reader, SQLStore):  # its transactions are read-only
        with pytest.raises(StoreError, match="read-only"):
            reader.save_predictions([record()])
    reader.close()


def _statements(store: Any) -> list[str]:
    """Record the SQL a store sends from now on (this thread; SQLite trace / engine event)."""
    seen: list[str] = []
    if isinstance(store, SQLStore):
        sa.event.listen(store.engine, "before_cursor_execute",
                        lambda conn, cursor, sql, *a: seen.append(sql))  # fmt: skip
    else:
        store.connection().set_trace_callback(seen.append)
    return seen


def test_count_labelled_is_one_count_query(store_url: str) -> None:
    """The lifecycle's "enough new feedback?" check (every webhook): one COUNT, the same number
    as the rows ``labelled`` reads, on both backends."""
    store = open_store(store_url)
    batch = rows(1500, start=1000.0)
    store.save_predictions(batch)
    for r in batch[::2]:  # every other question labelled
        store.save_feedback(FeedbackRecord(r.id, ["python"], 1.0, 1.0, 0, created_at=r.created_at))
    store.save_feedback(FeedbackRecord("f" * 32, ["go"], 0.0, 0.0, 0))  # no prediction: not counted
    reader = open_store(store_url, readonly=True)
    for since, until in ((0.0, 5000.0), (1000.0, 1100.0), (1101.0, 1102.0), (9e9, 9e9 + 1)):
        assert reader.count_labelled(since, until) == len(reader.labelled(since, until))
    assert reader.count_labelled(0.0, 5000.0) == 750
    seen = _statements(reader)
    assert reader.count_labelled(1000.0, 2000.0) == 500
    counts = [q for q in seen if q.strip().upper().startswith("SELECT")]
    assert len(counts) == 1 and "COUNT(*)" in counts[0], seen
    # paired, interleaved rounds: the COUNT against the full read it replaced
    timings: dict[str, list[float]] = {"count": [], "labelled": []}
    for _ in range(5):
        for name, fn in (("count", reader.count_labelled), ("labelled", reader.labelled)):
            t0 = time.perf_counter()
            fn(0.0, 5000.0)
            timings[name].append(time.perf_counter() - t0)
    best = {k: min(v) * 1000 for k, v in timings.items()}
    backend = "PostgreSQL" if isinstance(reader, SQLStore) else "SQLite"
    print(f"{backend}, 750 labelled of 1,500: count_labelled {best['count']:.2f} ms, "
          f"labelled() {best['labelled']:.2f} ms (best of 5, interleaved)")  # fmt: skip
    reader.close()
    store.close()


def test_texts_are_an_even_sample_of_the_period_with_their_feedback(store_url: str) -> None:
    """The drift job's text sample: at most ``limit`` rows spread over the whole period."""
    store = open_store(store_url)
    batch = rows(1000, start=1000.0)
    for i, r in enumerate(batch):
        r.title = f"question {i}"
    store.save_predictions(batch)
    store.save_feedback(FeedbackRecord(batch[0].id, ["python", "flutter"], 0.5, 0.5, 1))
    reader = open_store(store_url, readonly=True)
    sample = reader.texts(1000.0, 2000.0, limit=100)
    assert 90 <= len(sample) <= 100
    numbers = sorted(int(t.split()[1]) for t in sample["title"])
    assert numbers[0] < 20 and numbers[-1] > 980  # the whole period, not its first rows
    assert list(sample.columns) == ["title", "url", "model_version", "feedback_tags"]
    everything = reader.texts(1000.0, 2000.0, limit=5000)
    assert len(everything) == 1000
    given = everything.loc[everything["title"] == "question 0", "feedback_tags"].iloc[0]
    assert given == ["python", "flutter"]
    assert everything["feedback_tags"].isna().sum() == 999
    assert reader.texts(5000.0, 6000.0, limit=10).empty
    reader.close()
    store.close()


def _tag_quality_rows(store: Any) -> list[PredictionRecord]:
    """300 questions with varied predicted and given tags: capitals, blanks, repeats, tags
    outside the vocabulary, empty predictions; every other one with feedback."""
    vocab = ["python", "javascript", "java", "c#", "list"]
    given_pool = [*vocab, "rust", " Python ", "JAVA", "c# ", "js", "python"]
    rng = random.Random(17)
    batch = rows(300, start=1000.0)
    for i, r in enumerate(batch):
        r.title = f"question {i}"
        r.url = f"https://stackoverflow.com/q/{i}"
        r.tags = rng.sample([*vocab, "go"], rng.randint(0, 3))
    store.save_predictions(batch)
    for r in batch[::2]:
        given = rng.sample(given_pool, rng.randint(1, 4))
        store.save_feedback(FeedbackRecord(r.id, given, 0.0, 0.0, 0, created_at=r.created_at))
    # feedback whose prediction is not stored (yet): not a question the window counts
    store.save_feedback(FeedbackRecord("f" * 32, ["python"], 0.0, 0.0, 0))
    return batch


def test_tag_counts_are_count_tags_on_the_same_rows(store_url: str, tmp_path: Path) -> None:
    """Per-tag tp/fp/fn in SQL (the drift report, the weekly summary) are exactly
    ``tagger.tagquality.count_tags`` on ``labelled``'s rows, on both backends and through the
    write-behind store; the fp/fn examples are the latest such questions."""
    store = open_store(store_url)
    _tag_quality_rows(store)
    vocab = ["python", "javascript", "java", "c#", "list", "never-used"]
    reader = open_store(store_url, readonly=True)
    writer = WriteBehindStore(open_store(store_url), spool_dir=tmp_path / "spool")
    for since, until in ((0.0, 5000.0), (1000.0, 1151.0), (1201.0, 1202.0), (9e9, 9e9 + 1)):
        labelled = reader.labelled(since, until)
        expected = count_tags(zip(labelled["predicted"], labelled["tags"], strict=True), vocab)
        assert reader.tag_counts(since, until, vocab) == expected
        assert writer.tag_counts(since, until, vocab) == expected
    counts = reader.tag_counts(0.0, 5000.0, vocab)
    assert counts["never-used"] == TagCounts("never-used")
    assert all(c.tp and c.fp and c.fn for t, c in counts.items() if t != "never-used"), counts
    labelled = reader.labelled(1000.0, 1200.0)
    for tag in ("python", "c#"):
        wrong = []
        for row in labelled.itertuples():
            p = {t.strip().lower() for t in row.predicted}
            g = {t.strip().lower() for t in row.tags}
            if (tag in p) != (tag in g):
                wrong.append((row.title, "fp" if tag in p else "fn"))
        examples = reader.tag_examples(tag, 1000.0, 1200.0)
        assert [(e["title"], e["outcome"]) for e in examples] == wrong[::-1][:3]
        assert examples[0]["url"].startswith("https://stackoverflow.com/q/")
        assert isinstance(examples[0]["predicted"], list) and examples[0]["given"]
        assert writer.tag_examples(tag, 1000.0, 1200.0, limit=5) == reader.tag_examples(
            tag, 1000.0, 1200.0, limit=5
        )
        assert len(reader.tag_examples(tag, 0.0, 5000.0, limit=50)) == 50
    assert reader.tag_examples("never-used", 0.0, 5000.0) == []
    writer.close()
    reader.close()
    store.close()


def test_postgresql_urls_open_the_sql_store_and_spool_locally(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgresql+psycopg://")):
        store = open_store(url)
        assert isinstance(store, SQLStore) and not store.replaced()
        store.close()
    assert spool_dir_for(postgres_url) == Path("var/spool")  # the predictor host's disk


def test_unstorable_rows_are_refused_and_set_aside(store_url: str, tmp_path: Path) -> None:
    """A lone surrogate (both) or a NUL (PostgreSQL cannot store one) is RowRejected: the
    write-behind dead-letters that row alone and the others land."""
    bad = [dataclasses.replace(record(), title="python \ud800")]
    if store_url.startswith("postgresql"):
        bad.append(dataclasses.replace(record(), body="nul \x00 byte"))
    store = open_store(store_url)
    for r in bad:
        with pytest.raises(RowRejected):
            store.save_predictions([r])
    dead: list[int] = []
    writer = WriteBehindStore(store, spool_dir=tmp_path / "spool", on_dead_letter=dead.append)
    good = rows(150)
    for r in [*good[:70], *bad, *good[70:]]:
        writer.save_prediction(r)
    assert writer.flush(timeout=10)
    assert writer.dead_letters == len(bad) and writer.problem() is None
    writer.close()
    reader = open_store(store_url, readonly=True)
    assert reader.count() == 150
    reader.close()


def test_both_backends_read_the_same_rows_alike(tmp_path: Path, postgres_url: str) -> None:
    """features, labelled and problematic: same columns, dtypes and values on both."""
    stores = [open_store(f"sqlite:///{tmp_path / 's.sqlite3'}"), open_store(postgres_url)]
    batch = rows(200)
    feedback = [
        FeedbackRecord(
            r.id,
            ["python", "c#"][: 1 + i % 2],
            0.5 * (i % 3),
            0.25 * (i % 4),
            i % 2,
            created_at=r.created_at + 10,
        )
        for i, r in enumerate(batch[::3])
    ]
    for store in stores:
        store.save_predictions(batch[:120])
        store.save_predictions(batch[120:])
        for f in feedback:
            store.save_feedback(f)
    start, end = batch[10].created_at, batch[190].created_at
    lite, pg = (s.features(start, end) for s in stores)
    pd.testing.assert_frame_equal(lite, pg)
    assert len(lite) == 180 and lite["n_feedback_tags"].notna().sum() == 60
    after = int(lite["seq"].iloc[99])
    pd.testing.assert_frame_equal(*(s.features(start, end, after_seq=after) for s in stores))
    pd.testing.assert_frame_equal(*(s.labelled(start, end) for s in stores))
    assert stores[0].problematic(start, 7) == stores[1].problematic(start, 7)
    for store in stores:
        store.close()


# -- PostgreSQL only: the schema's versions, a server restart --------------------------------


def test_sqlite_and_postgres_schemas_match_the_one_definition(
    tmp_path: Path, postgres_url: str
) -> None:
    """Alembic's autogenerate diff against store/schema.py is empty on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION
    SQLiteStore(tmp_path / "s.sqlite3").close()
    open_store(postgres_url).close()
    for url in (f"sqlite:///{tmp_path / 's.sqlite3'}", engine_url(postgres_url)):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == [], f"{engine.dialect.name}: {diff}"
        engine.dispose()


def _open_writer(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        SQLStore(url, timeout_seconds=0.5, busy_timeout_seconds=0.02).close()  # as the predictor
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_migration_is_idempotent_and_safe_when_replicas_start_together(
    postgres_url: str,
) -> None:
    ctx = multiprocessing.get_context("fork")  # no engine in this process yet: safe
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_open_writer, args=(postgres_url, barrier, results))
             for _ in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    outcome = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert outcome == ["ok", "ok"]
    for _ in range(2):  # the command, twice: nothing left to do the second time
        done = subprocess.run(
            [sys.executable, "-m", "store", "migrate", "--url", postgres_url],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"schema at revision {HEAD_REVISION} (head)" in done.stdout
        assert "postgres@127.0.0.1" in done.stdout
    engine = sa.create_engine(engine_url(postgres_url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
            (HEAD_REVISION,)
        ]
        assert conn.execute(sa.text("SELECT count(*) FROM meta")).scalar() == 1
    engine.dispose()


def test_a_bad_url_or_an_absent_server_is_one_clear_error(postgres_url: str) -> None:
    dead = postgres_url.rsplit(":", 1)[0] + ":1/x"
    with pytest.raises(StoreError, match=r"cannot open store \(.*\)$") as err:
        open_store(dead, timeout_seconds=1)
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match=r"postgresql://u:\*\*\*@") as err:
        open_store("postgresql://u:secret@127.0.0.1:1/x", timeout_seconds=1)
    assert "secret" not in str(err.value)


def test_a_stopped_server_is_a_store_error_then_writes_resume_after_restart(
    tmp_path: Path,
) -> None:
    url, server = start_postgres()
    try:
        store = SQLStore(url, timeout_seconds=1)
        errors: list[Exception] = []
        writer = WriteBehindStore(
            store, on_error=errors.append, max_backoff_seconds=0.2, spool_dir=tmp_path / "spool"
        )
        writer.save_predictions(rows(10))
        assert writer.flush(timeout=10)
        server.stop()
        with pytest.raises(StoreError) as err:
            store.get_prediction("0" * 32)
        assert type(err.value) is StoreError and "\n" not in str(err.value)
        queued = rows(50, start=1_700_000_000.0)
        writer.save_predictions(queued)  # acknowledged while the server is down
        wait_for(lambda: bool(errors) and writer.problem() is not None, "writes reported failing")
        assert writer.pending == 50
        server.start()
        wait_for(lambda: writer.pending == 0 and writer.problem() is None, "written after restart")
        assert store.count() == 60
        assert all(store.get_prediction(r.id) is not None for r in queued)
        writer.close()
    finally:
        server.destroy()
