"""The prediction store, read and written by every tagwatch process.

The predictor writes served questions and feedback; the drift job, the weekly report and the
lifecycle (retraining from feedback) read them. SQLite (WAL) is the embedded default.
"""

from store.records import (
    FEEDBACK_SOURCES,
    BatchPolicy,
    FeedbackRecord,
    PredictionRecord,
    PredictionStore,
    ResolvedFeedback,
    RowRejected,
    StoreError,
    id_signed_by,
    is_unsigned_id,
    minted_at,
    new_prediction_id,
)
from store.sqlite import SCHEMA, SQLiteStore, open_store, spool_dir_for
from store.writebehind import WriteBehindStore

__all__ = [
    "FEEDBACK_SOURCES",
    "SCHEMA",
    "BatchPolicy",
    "FeedbackRecord",
    "PredictionRecord",
    "PredictionStore",
    "ResolvedFeedback",
    "RowRejected",
    "SQLiteStore",
    "StoreError",
    "WriteBehindStore",
    "id_signed_by",
    "is_unsigned_id",
    "minted_at",
    "new_prediction_id",
    "open_store",
    "spool_dir_for",
]
