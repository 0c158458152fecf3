"""Server instances: each backend process's heartbeat row, and the instance holding an
Idempotency-Key in progress, so a key whose process died is taken over in seconds instead
of after the whole lease.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by ``create_all`` of newer models before being stamped may have them.
    inspector = sa.inspect(op.get_bind())
    if 'server_instances' not in inspector.get_table_names():
        op.create_table('server_instances',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=False),
        sa.Column('seen_at', sa.Float(), nullable=False),
        sa.Column('alive_until', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id')
        )
    columns = {c["name"] for c in inspector.get_columns('idempotent_responses')}
    if 'holder' not in columns:
        # A nullable column: SQLite adds it in place (no table copy), and servers still
        # running the old code keep inserting rows (holder NULL: the lease decides).
        with op.batch_alter_table('idempotent_responses', schema=None) as batch_op:
            batch_op.add_column(sa.Column('holder', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('idempotent_responses', schema=None) as batch_op:
        batch_op.drop_column('holder')
    op.drop_table('server_instances')
