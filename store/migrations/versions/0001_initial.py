"""The store as of issue 10: predictions, feedback (no foreign key), feedback_pending, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# a frozen copy of store/schema.py at this revision (tests/store compare the two)
FEATURES = [
    ("title_chars", sa.Integer), ("body_chars", sa.Integer), ("n_code_blocks", sa.Integer),
    ("n_links", sa.Integer), ("n_tokens", sa.Integer), ("oov_ratio", sa.Double),
    ("n_predicted_tags", sa.Integer), ("max_score", sa.Double), ("top_tag", sa.Text),
]  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("scores", sa.Text, nullable=False),
        sa.Column("inference_seconds", sa.Double, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        *(sa.Column(name, type_, nullable=False) for name, type_ in FEATURES),
    )
    op.create_index("predictions_created_at", "predictions", ["created_at"])
    op.create_table(
        "feedback",
        sa.Column("prediction_id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("coverage", sa.Double, nullable=False),
        sa.Column("jaccard", sa.Double, nullable=False),
        sa.Column("n_tags", sa.Integer, nullable=False),
        sa.Column("n_unknown_tags", sa.Integer, nullable=False),
    )
    op.create_index("feedback_created_at", "feedback", ["created_at"])
    op.create_table(
        "feedback_pending",
        sa.Column("prediction_id", sa.Text, primary_key=True),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("n_unknown_tags", sa.Integer, nullable=False),
    )
    op.create_index("feedback_pending_received_at", "feedback_pending", ["received_at"])
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # the store's identity: readers (the drift state) notice a store recreated under them
    op.bulk_insert(meta, [{"key": "store_id", "value": os.urandom(16).hex()}])


def downgrade() -> None:
    for table in ("meta", "feedback_pending", "feedback", "predictions"):
        op.drop_table(table)
