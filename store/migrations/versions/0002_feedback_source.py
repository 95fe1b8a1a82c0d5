"""Feedback provenance (issue 15): ``source`` on feedback and feedback_pending.

Which credential sent each feedback ("token", "open"); rows stored before are "unknown".

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a constant default: PostgreSQL 11+ adds such a column without rewriting the table
    for table in ("feedback", "feedback_pending"):
        op.add_column(table, sa.Column("source", sa.Text, nullable=False, server_default="unknown"))


def downgrade() -> None:
    for table in ("feedback_pending", "feedback"):
        op.drop_column(table, "source")
