"""At most one active rollout per model (a partial unique index), and an optional rate limit per API key.

The index makes "two rollouts started at once" end in one rollout even across registry
replicas: the second insert fails on the index and the caller gets 409.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | None = None
depends_on: str | None = None

ACTIVE_STATES_SQL = "state IN ('running', 'paused', 'awaiting_approval')"


def upgrade() -> None:
    # A database from before migrations was completed from the newest models before being stamped at 0001,
    # so it may have either already.
    schema = sa.inspect(op.get_bind())
    if "rate_limit_per_minute" not in {c["name"] for c in schema.get_columns("api_keys")}:
        with op.batch_alter_table("api_keys") as batch:
            batch.add_column(sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
    if "uq_rollouts_one_active_per_model" not in {i["name"] for i in schema.get_indexes("rollouts")}:
        # Before this index, two replicas could each start a rollout of one model: keep the newest active one.
        op.execute(sa.text(
            f"UPDATE rollouts SET state = 'aborted', updated_at = CURRENT_TIMESTAMP, reason = :reason "
            f"WHERE {ACTIVE_STATES_SQL} AND id NOT IN "
            f"(SELECT MAX(id) FROM rollouts WHERE {ACTIVE_STATES_SQL} GROUP BY model_id)"
        ).bindparams(reason="aborted by migration 0002: a newer rollout of this model was active, and only one may be"))
        op.create_index("uq_rollouts_one_active_per_model", "rollouts", ["model_id"], unique=True,
                        sqlite_where=sa.text(ACTIVE_STATES_SQL), postgresql_where=sa.text(ACTIVE_STATES_SQL))


def downgrade() -> None:
    op.drop_index("uq_rollouts_one_active_per_model", table_name="rollouts")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit_per_minute")
