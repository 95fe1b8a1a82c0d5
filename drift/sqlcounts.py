"""Per-bin histogram counts computed in the database: the job moves kilobytes, not rows.

The same :data:`~drift.histograms.BinCounts` as :func:`drift.histograms.count_rows`, from
``GROUP BY (time bin, bucket)`` queries written with SQLAlchemy Core, so that they run on
SQLite and PostgreSQL alike. A scan of the rows costs more than its aggregate, so features
share scans (:data:`SCANS`: 3 scans, not 10; measured, with one query per feature, GROUPING
SETS and a LATERAL VALUES unpivot, in benchmarks/drift_scale.py). Keys are computed exactly
as the pandas path computes them:

* numeric bucket = ``floor(CAST(x AS DOUBLE) / width + 1e-9)`` in IEEE double arithmetic, the
  width and the epsilon bound as parameters (a literal ``0.05`` would be parsed by the
  database, a ``numeric`` in PostgreSQL); NULL, NaN and ±inf get the NaN key, as in numpy;
* time bin = ``floor(created_at) // bin seconds``: pandas converts float seconds to ns
  without crossing a whole second (resolution of an epoch double ~0.2 µs), so for a bin width
  of whole seconds both agree for every stored ``created_at`` ≥ 0 (other widths: pandas path);
* ``top_tag`` outside the monitored categories is ``"other"``; rows served by another model
  version with an artefact in ``models/`` are left out (:mod:`drift.versions`).

**Which rows a run may remember (the ``seq`` horizon).** An incremental run counts rows with
``seq > last_seq`` and remembers a new ``last_seq``. In SQLite writers are serialised, so seqs
commit in order. In PostgreSQL an identity value is drawn when a row is inserted, not when its
transaction commits: a writer that drew seq 100 may commit after another writer's seq 101 was
read; remembering 101 would skip 100 forever. Of the options:

* a fixed safety margin re-read needs to know which of the re-read rows were counted (state
  per row) and still fails for a transaction slower than the margin;
* per-bin row-count checks catch every late row, but cost a scan of the whole window per run;
* **chosen**: the run reads ``S = max(seq)`` and the snapshot (``pg_current_snapshot()``) in
  one statement. Only transactions in progress in that snapshot can hold a seq below ``S``
  that is not visible yet (a later one draws a larger seq, with the identity's default
  ``CACHE 1``). The run waits (≤
  ``wait_seconds``, the shippers' batches last milliseconds) for those of them that write
  ``predictions`` (a lock on the table in ``pg_locks``), after which every seq ≤ ``S`` is
  settled: committed and visible, or rolled back for good. If one is still running, nothing
  new is remembered this run (the horizon stays at ``last_seq``) and its rows are counted
  again next time.

Rows between the remembered horizon and ``S`` are still counted for this run's judgement, as
*pending* counts that are not saved. The same mechanism keeps rows of the current, partial bin
(not read yet) from being skipped when a late row of a complete bin has a larger seq: the
horizon stays below the first seq of the current bin.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite as sqlite_dialect

from drift.histograms import (
    NAN_KEY,
    NUMERIC_BIN_WIDTHS,
    OTHER,
    BinCounts,
    _empty_bin,
)
from store.records import StoreError
from store.schema import feedback, predictions
from tagger.artefact import MODEL_FILE

log = logging.getLogger(__name__)

NS = 10**9
EPSILON = 1e-9  # as drift.histograms.count_rows: 0.15 / 0.05 is 2.9999999999999996
INF = float("inf")

_p = predictions.c
_f = feedback.c


class Database(Protocol):
    """One session on the store's database: runs Core statements, returns plain rows."""

    dialect: str

    def rows(self, stmt: sa.Executable) -> list[tuple[Any, ...]]: ...


class _SQLAlchemyDatabase:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def rows(self, stmt: sa.Executable) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(stmt)]


class _SQLite3Database:
    """Core statements on the SQLite store's own (guarded, read-only) sqlite3 connection."""

    dialect = "sqlite"
    _compiler = sqlite_dialect.dialect()

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, stmt: sa.Executable) -> list[tuple[Any, ...]]:
        compiled = stmt.compile(  # type: ignore[attr-defined]
            dialect=self._compiler, compile_kwargs={"render_postcompile": True}
        )
        params = compiled.construct_params()
        args = [params[name] for name in compiled.positiontup or ()]
        return [tuple(r) for r in self.conn.execute(str(compiled), args)]


class Source(Protocol):
    def session(self, snapshot: bool) -> contextlib.AbstractContextManager[Database]: ...


class _EngineSource:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def session(self, snapshot: bool) -> Iterator[Database]:
        with self.engine.connect() as conn:
            postgresql = conn.dialect.name == "postgresql"
            if snapshot and postgresql:
                # every feature's query sees the same rows
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if snapshot and postgresql:
                    # the planner expects a group per row (keys are expressions) and would
                    # sort millions of rows; the hash tables stay small (few keys per bin).
                    # No JIT: compiling each query costs seconds on a busy host
                    for setting in ("enable_sort = off", "jit = off", "work_mem = '64MB'"):
                        conn.execute(sa.text(f"SET LOCAL {setting}"))
                yield _SQLAlchemyDatabase(conn)


class _SQLite3Source:
    def __init__(self, connect: Any) -> None:
        self.connect = connect

    @contextlib.contextmanager
    def session(self, snapshot: bool) -> Iterator[Database]:
        conn: sqlite3.Connection = self.connect()
        if not snapshot:
            yield _SQLite3Database(conn)
            return
        if conn.in_transaction:
            conn.rollback()
        conn.execute("BEGIN")  # one read transaction: the same rows for every feature
        try:
            yield _SQLite3Database(conn)
        finally:
            conn.rollback()


def source_for(store: Any) -> Source | None:
    """How to run SQL on ``store``: its SQLAlchemy engine (:class:`store.sql.SQLStore`), or its
    sqlite3 connection (:meth:`store.sqlite.SQLiteStore.connection`); None if neither."""
    engine = getattr(store, "engine", None)
    if isinstance(engine, sa.Engine):
        return _EngineSource(engine)
    connect = getattr(store, "connection", None)
    if callable(connect):
        return _SQLite3Source(connect)
    return None


@dataclass
class SQLCounts:
    """What a run adds: ``settled`` counts (saved, ``seq ≤ horizon``) and ``pending`` ones
    (this run's judgement only, ``horizon < seq ≤ max_seq``)."""

    settled: dict[int, BinCounts] = field(default_factory=dict)
    pending: dict[int, BinCounts] = field(default_factory=dict)
    horizon: int = 0
    max_seq: int = 0
    rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def supports_bin(bin_ns: int) -> bool:
    """The SQL time bin is exact for bin widths of whole seconds (see the module docstring)."""
    return bin_ns > 0 and bin_ns % NS == 0


def other_versions(version: str, models_dir: Path) -> list[str]:
    """Versions with an artefact here other than ``version``: their rows are not counted
    (the same set :func:`drift.versions.rows_of_version` leaves out of any read)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir() if d.name != version and (d / MODEL_FILE).is_file()
    )


def _bucket(column: Any, width: float) -> Any:
    """``floor(x / width + 1e-9)`` as a BIGINT, the NaN key for NULL/NaN/±inf."""
    v = sa.cast(column, sa.Double()) / sa.literal(float(width), sa.Double()) + sa.literal(
        EPSILON, sa.Double()
    )
    finite = sa.and_(v > sa.literal(-INF, sa.Double()), v < sa.literal(INF, sa.Double()))
    return sa.case(
        (finite, sa.cast(sa.func.floor(v), sa.BigInteger())),
        else_=sa.literal(int(NAN_KEY), sa.BigInteger()),
    )


def _time_bin(bin_seconds: int) -> Any:
    whole = sa.cast(sa.func.floor(_p.created_at), sa.BigInteger())
    # integer division (both dialects) of non-negative integers = floor
    return (whole // sa.literal(bin_seconds, sa.BigInteger())).label("tb")


def _where(
    start_ns: int,
    end_ns: int,
    after_seq: int,
    max_seq: int,
    exclude: list[str],
    steer: bool = False,
) -> list[Any]:
    """The rows to count. ``steer`` (SQLite, whose planner cannot see bound values): a cold
    run reads the window through the ``created_at`` index, an incremental one the new seqs
    (``x + 0`` keeps a term from choosing the index)."""
    created: Any = _p.created_at
    seq: Any = _p.seq
    if steer and after_seq == 0:
        seq = seq + 0
    elif steer:
        created = created + 0
    where = [
        created >= sa.literal(start_ns / NS, sa.Double()),
        created < sa.literal(end_ns / NS, sa.Double()),
        seq > after_seq,
        seq <= max_seq,
    ]
    if exclude:
        where.append(_p.model_version.not_in(exclude))
    return where


# Features counted from one scan of the rows each: a first GROUP BY on the scan's combined keys
# (thousands of combinations per bin, not rows: small counts; ratios in 0.05 steps with title
# lengths in 5s; body lengths with token counts, which go together), then one GROUP BY per
# feature on that small result. 3 scans instead of 10 (a scan costs more than its aggregate).
SCANS: tuple[tuple[str, ...], ...] = (
    ("n_code_blocks", "n_links", "n_predicted_tags", "top_tag"),  # + the feedback counters
    ("oov_ratio", "max_score", "title_chars"),
    ("body_chars", "n_tokens"),
)
FEEDBACK_FIELDS = ("fb_questions", "fb_tags", "fb_unknown")
FIELDS = (*NUMERIC_BIN_WIDTHS, "top_tag", *FEEDBACK_FIELDS)
assert sorted(f for scan in SCANS for f in scan) == sorted((*NUMERIC_BIN_WIDTHS, "top_tag"))


def scan_queries(
    bin_ns: int,
    categories: list[str],
    where: list[Any],
    horizon: int,
    feedback_in_scan: bool = True,
) -> list[Any]:
    """Per scan, rows ``(field index in FIELDS, time bin, settled 1/0, key, count)``.

    The ``top_tag`` key is its index in ``categories`` (-1: "other"), so every key is an
    integer. The feedback counters (key 0) ride on the first scan (PostgreSQL: a hash join,
    no extra scan), or come from a first query of their own, rows ``(time bin, settled,
    questions, tags, unknown tags)`` (SQLite: driven by the feedback rows, cheaper than an
    index probe per prediction)."""
    tb = _time_bin(bin_ns // NS)
    settled = sa.case((_p.seq <= horizon, 1), else_=0).label("settled")
    keys: dict[str, Any] = {f: _bucket(_p[f], w) for f, w in NUMERIC_BIN_WIDTHS.items()}
    keys["top_tag"] = sa.case({c: i for i, c in enumerate(categories)}, value=_p.top_tag, else_=-1)
    has_fb = _f.n_tags > 0
    fb_values = {
        "fb_questions": sa.case((has_fb, 1), else_=0),
        "fb_tags": sa.case((has_fb, _f.n_tags), else_=0),
        "fb_unknown": sa.case((has_fb, _f.n_unknown_tags), else_=0),
    }
    out: list[Any] = []
    if not feedback_in_scan:
        rows = (
            sa.select(tb, settled, _f.n_tags, _f.n_unknown_tags)
            .select_from(predictions.join(feedback, _f.prediction_id == _p.id))
            .where(*where, has_fb)
            .subquery("fb")
        )
        out.append(
            sa.select(
                rows.c.tb,
                rows.c.settled,
                sa.func.count(),
                sa.func.sum(rows.c.n_tags),
                sa.func.sum(rows.c.n_unknown_tags),
            ).group_by(rows.c.tb, rows.c.settled)
        )
    for i, scan in enumerate(SCANS):
        with_fb = feedback_in_scan and i == 0
        names = [f"k{j}" for j in range(len(scan))]
        cols = [tb, settled, *(keys[f].label(n) for f, n in zip(scan, names, strict=True))]
        source: Any = predictions
        if with_fb:
            cols += [v.label(name) for name, v in fb_values.items()]
            source = predictions.outerjoin(feedback, _f.prediction_id == _p.id)
        rows = sa.select(*cols).select_from(source).where(*where).subquery(f"r{i}")
        group = [rows.c.tb, rows.c.settled, *(rows.c[n] for n in names)]
        sums = [sa.func.count().label("n")]
        if with_fb:
            sums += [sa.func.sum(rows.c[name]).label(name) for name in fb_values]
        combos = sa.select(*group, *sums).group_by(*group).cte(f"c{i}")
        branches = [
            sa.select(
                sa.literal(FIELDS.index(f)),
                combos.c.tb,
                combos.c.settled,
                combos.c[n],
                sa.func.sum(combos.c.n),
            ).group_by(combos.c.tb, combos.c.settled, combos.c[n])
            for f, n in zip(scan, names, strict=True)
        ]
        if with_fb:
            branches += [
                sa.select(
                    sa.literal(FIELDS.index(name)),
                    combos.c.tb,
                    combos.c.settled,
                    sa.literal(0),
                    sa.func.sum(combos.c[name]),
                ).group_by(combos.c.tb, combos.c.settled)
                for name in fb_values
            ]
        out.append(sa.union_all(*branches))
    return out


def _settle_postgresql(db: Database, wait_seconds: float) -> tuple[int, bool]:
    """``(S, settled)``: the largest visible seq, and whether every seq ≤ S is now final."""
    ((max_seq, snap),) = db.rows(
        sa.text(
            "SELECT (SELECT max(seq) FROM predictions) AS s, pg_current_snapshot()::text AS snap"
        )
    )
    max_seq = int(max_seq or 0)
    # writers of predictions in progress in that snapshot (their xid locks, joined through
    # their virtual transaction to a lock on the table)
    writers = db.rows(
        sa.text(
            "SELECT x::text FROM pg_snapshot_xip(CAST(:snap AS pg_snapshot)) AS x "
            "WHERE pg_xact_status(x) = 'in progress' "
            "AND (x::text::bigint % 4294967296) IN ("
            "  SELECT t.transactionid::text::bigint FROM pg_locks t JOIN pg_locks r "
            "  ON r.virtualtransaction = t.virtualtransaction "
            "  WHERE t.locktype = 'transactionid' AND r.locktype = 'relation' "
            "  AND r.relation = CAST('predictions' AS regclass))"
        ).bindparams(snap=snap)
    )
    xids = [str(x) for (x,) in writers]
    deadline = time.monotonic() + wait_seconds
    while xids:
        running = db.rows(
            sa.text(
                "SELECT x::text FROM unnest(CAST(:xids AS xid8[])) AS x "
                "WHERE pg_xact_status(x) = 'in progress'"
            ).bindparams(sa.bindparam("xids", xids, type_=sa.ARRAY(sa.Text())))
        )
        xids = [str(x) for (x,) in running]
        if not xids:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "%d writer transaction(s) of predictions still open after %.1f s (xids %s): "
                "rows up to seq %d are counted but not remembered this run",
                len(xids),
                wait_seconds,
                ", ".join(xids[:5]),
                max_seq,
            )
            return max_seq, False
        time.sleep(0.02)
    return max_seq, True


def settle(db: Database, wait_seconds: float = 5.0) -> tuple[int, bool]:
    """``(S, settled)``: the largest seq to count this run, and whether all seqs ≤ S are final
    (always in SQLite, whose writers are serialised)."""
    if db.dialect == "postgresql":
        return _settle_postgresql(db, wait_seconds)
    ((s,),) = db.rows(sa.select(sa.func.max(_p.seq)))
    return int(s or 0), True


def _first_seq_after(db: Database, end_ns: int, after_seq: int, max_seq: int) -> int | None:
    """The smallest seq of a row of the current (partial) bin or later, not counted yet."""
    q = sa.select(sa.func.min(_p.seq)).where(
        _p.created_at >= sa.literal(end_ns / NS, sa.Double()),
        _p.seq > after_seq,
        _p.seq <= max_seq,
    )
    ((v,),) = db.rows(q)
    return None if v is None else int(v)


def _add(
    out: tuple[dict[int, BinCounts], dict[int, BinCounts]],
    tb: int,
    is_settled: int,
) -> BinCounts:
    return out[0 if is_settled else 1].setdefault(int(tb), _empty_bin())


@dataclass(frozen=True)
class CountWindow:
    """The rows one run counts: complete bins ``[start_ns, end_ns)`` of ``bin_ns``, rows with
    ``seq > after_seq``, ``top_tag`` keyed by ``categories``, model versions in ``exclude``
    left out."""

    start_ns: int
    end_ns: int
    bin_ns: int
    after_seq: int
    categories: list[str]
    exclude: list[str]


def count_new_rows(
    source: Source,
    *,
    start_ns: int,
    end_ns: int,
    bin_ns: int,
    after_seq: int,
    categories: list[str],
    exclude_versions: Iterable[str] = (),
    wait_seconds: float = 5.0,
) -> SQLCounts:
    """Counts of the rows of complete bins ``[start, end)`` with ``seq > after_seq``.

    ``settled`` holds the rows with ``seq ≤ horizon`` (to merge into the saved state, whose
    ``last_seq`` becomes ``horizon``); ``pending`` the later ones (for this run's judgement).
    """
    if not supports_bin(bin_ns):
        raise ValueError(f"bin width {bin_ns} ns is not whole seconds: use the pandas path")
    window = CountWindow(start_ns, end_ns, bin_ns, after_seq, categories, sorted(exclude_versions))
    try:
        result = _settled_horizon(source, window, wait_seconds)
        if result.max_seq > after_seq:
            _scan_into(source, window, result)
        return result
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"drift counts failed: {first}") from exc


def _settled_horizon(source: Source, w: CountWindow, wait_seconds: float) -> SQLCounts:
    """An empty result with its ``horizon``: the last seq below which no row can still
    commit (nor belong to the current, partial bin), and ``max_seq``."""
    t0 = time.perf_counter()
    with source.session(snapshot=False) as db:
        max_seq, settled_all = settle(db, wait_seconds)
        horizon = max_seq if settled_all else w.after_seq
        first_later = _first_seq_after(db, w.end_ns, w.after_seq, max_seq)
    if first_later is not None:
        horizon = min(horizon, first_later - 1)
    horizon = max(horizon, w.after_seq)
    return SQLCounts(horizon=horizon, max_seq=max_seq, seconds={"settle": time.perf_counter() - t0})


def _scan_into(source: Source, w: CountWindow, result: SQLCounts) -> None:
    """Run the scans of one snapshot and add their counts to ``result``."""
    out = (result.settled, result.pending)
    with source.session(snapshot=True) as db:
        where = _where(
            w.start_ns, w.end_ns, w.after_seq, result.max_seq, w.exclude, db.dialect == "sqlite"
        )
        in_scan = db.dialect == "postgresql"
        queries = scan_queries(w.bin_ns, w.categories, where, result.horizon, in_scan)
        names = ["+".join(scan) for scan in SCANS]
        for name, query in zip(names if in_scan else ["feedback", *names], queries, strict=True):
            t1 = time.perf_counter()
            rows = db.rows(query)
            result.seconds[name] = time.perf_counter() - t1
            if name == "feedback":
                _add_feedback_rows(out, rows)
            else:
                _add_scan_rows(out, rows, w.categories)
    result.rows = sum(b["rows"] for d in out for b in d.values())


def _add_feedback_rows(
    out: tuple[dict[int, BinCounts], dict[int, BinCounts]], rows: list[tuple[Any, ...]]
) -> None:
    for tb, is_settled, questions, tags, unknown in rows:
        b = _add(out, tb, is_settled)
        b["fb_questions"] += int(questions)
        b["fb_tags"] += int(tags)
        b["fb_unknown"] += int(unknown)


def _add_scan_rows(
    out: tuple[dict[int, BinCounts], dict[int, BinCounts]],
    rows: list[tuple[Any, ...]],
    categories: list[str],
) -> None:
    for field_index, tb, is_settled, key, n in rows:
        b = _add(out, tb, is_settled)
        name = FIELDS[field_index]
        if name in FEEDBACK_FIELDS:
            b[name] += int(n)
            continue
        if name == "top_tag":
            key = OTHER if key < 0 else categories[key]
            b["rows"] += int(n)  # every row has exactly one top_tag key
        hist = b["hist"].setdefault(name, {})
        hist[str(key)] = hist.get(str(key), 0) + int(n)
