"""The store's schema, defined once for every dialect.

SQLite's DDL is generated from this :data:`metadata` (:func:`sqlite_ddl`); PostgreSQL's is
versioned by Alembic (``store/migrations/``, revision 0001 = these tables). A test compares
both databases with this metadata (Alembic's autogenerate diff must be empty).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable
from sqlalchemy.types import TypeEngine

from tagger.columns import FEATURE_COLUMNS

metadata = MetaData()

# REAL in SQLite (as the files written before this module); 8-byte DOUBLE PRECISION elsewhere
# (PostgreSQL's REAL is 4 bytes: a float32 epoch would lose minutes)
Real: TypeEngine[float] = Double().with_variant(sqlite.REAL(), "sqlite")
# SQLite's rowid alias must be exactly "INTEGER PRIMARY KEY"; a BIGINT identity elsewhere
Seq: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

_FEATURE_TYPES: dict[str, TypeEngine[Any]] = {
    "title_chars": Integer(),
    "body_chars": Integer(),
    "n_code_blocks": Integer(),
    "n_links": Integer(),
    "n_tokens": Integer(),
    "oov_ratio": Real,
    "n_predicted_tags": Integer(),
    "max_score": Real,
    "top_tag": Text(),
}
assert list(_FEATURE_TYPES) == list(FEATURE_COLUMNS), "schema and FEATURE_COLUMNS disagree"

predictions = Table(
    "predictions",
    metadata,
    # seq orders rows for incremental readers (the drift job's after_seq); AUTOINCREMENT in
    # SQLite so that a deleted last row's seq is never reused
    Column("seq", Seq, Identity(), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("created_at", Real, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("url", Text),
    Column("tags", Text, nullable=False),  # JSON list
    Column("scores", Text, nullable=False),  # JSON object
    Column("inference_seconds", Real, nullable=False),
    Column("model_version", Text, nullable=False),
    *(Column(name, type_, nullable=False) for name, type_ in _FEATURE_TYPES.items()),
    Index("predictions_created_at", "created_at"),
    sqlite_autoincrement=True,
)

# no foreign key to predictions: feedback may be stored for a row that another replica has
# acknowledged but not shipped yet, and retention deletes both in its own order
feedback = Table(
    "feedback",
    metadata,
    Column("prediction_id", Text, primary_key=True),
    Column("created_at", Real, nullable=False),
    Column("tags", Text, nullable=False),  # JSON list
    Column("coverage", Real, nullable=False),
    Column("jaccard", Real, nullable=False),
    Column("n_tags", Integer, nullable=False),
    Column("n_unknown_tags", Integer, nullable=False),
    # which credential sent it (store.records.FEEDBACK_SOURCES); rows older than the column
    # (revision 0002) are "unknown"
    Column("source", Text, nullable=False, server_default="unknown"),
    Index("feedback_created_at", "created_at"),
)

# feedback received for a prediction this replica cannot see yet; resolved by the writers
feedback_pending = Table(
    "feedback_pending",
    metadata,
    Column("prediction_id", Text, primary_key=True),
    Column("received_at", Real, nullable=False),
    Column("tags", Text, nullable=False),  # JSON list
    Column("n_unknown_tags", Integer, nullable=False),
    Column("source", Text, nullable=False, server_default="unknown"),
    Index("feedback_pending_received_at", "received_at"),
)

# the store's identity: readers (the drift state) notice a store recreated under them
meta = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

TABLES = tuple(metadata.tables)


def sqlite_ddl() -> str:
    """The SQLite schema script: idempotent (IF NOT EXISTS), then the store's random id."""
    dialect = sqlite.dialect()
    parts = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))
    parts.append(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))))"
    )
    return ";\n".join(parts) + ";\n"


def sqlite_added_columns(existing: dict[str, set[str]]) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for each column of :data:`metadata` that an older SQLite
    file lacks (``existing``: its columns per table): SQLite's own migrations. Every added
    column is nullable or has a default, so old rows stay valid."""
    dialect = sqlite.dialect()
    statements = []
    for table in metadata.sorted_tables:
        have = existing.get(table.name)
        if not have:
            continue  # a missing table is created by sqlite_ddl()
        for column in table.columns:
            if column.name not in have:
                spec = str(CreateColumn(column).compile(dialect=dialect)).strip()
                statements.append(f"ALTER TABLE {table.name} ADD COLUMN {spec}")
    return statements
