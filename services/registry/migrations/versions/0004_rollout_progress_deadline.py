"""A rollout's progress deadline: a step held that long without a verdict aborts the rollout.

Rollouts started before this revision get NULL, no deadline: they hold as they did when they started.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A database from before migrations was completed from the newest models before being stamped at 0001,
    # so it may have the column already.
    if "progress_deadline_s" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("rollouts")}:
        with op.batch_alter_table("rollouts") as batch:
            batch.add_column(sa.Column("progress_deadline_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("progress_deadline_s")
