"""Operators: partial refunds (several refunds per order, who asked, idempotency key), code
batches (revoke a batch), the sandbox ledger's per-refund rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# 0001 created ``UNIQUE (order_id)`` without a name: PostgreSQL called it refunds_order_id_key;
# on SQLite the batch copy names it through this convention so it can be dropped.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _order_id_unique() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "refunds_order_id_key"
    return "uq_refunds_order_id"


def _has(table: str) -> tuple[set[str], set[str], bool]:
    """(columns, indexes, order_id unique?) of a table as it is; a database that was made by
    ``create_all`` of newer models before being stamped 0001 already has some of this."""
    inspector = sa.inspect(op.get_bind())
    if table not in inspector.get_table_names():
        return set(), set(), False
    columns = {c["name"] for c in inspector.get_columns(table)}
    indexes = {str(i["name"]) for i in inspector.get_indexes(table)}
    unique = any(u["column_names"] == ["order_id"]
                 for u in inspector.get_unique_constraints(table))
    return columns, indexes, unique


def upgrade() -> None:
    columns, _, order_unique = _has('refunds')
    if 'request_key' in columns:  # already the new shape (see _has)
        return _upgrade_rest()
    with op.batch_alter_table('refunds', schema=None, naming_convention=_NAMING) as batch_op:
        if order_unique:
            batch_op.drop_constraint(_order_id_unique(), type_='unique')
        batch_op.add_column(sa.Column('operator', sa.String(length=80), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('request_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_refunds_order_id'), ['order_id'], unique=False)
        batch_op.create_unique_constraint('uq_refunds_order_request_key',
                                          ['order_id', 'request_key'])
    _upgrade_rest()


def _upgrade_rest() -> None:
    if 'batch_id' in _has('codes')[0]:
        return
    with op.batch_alter_table('codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_id', sa.String(length=24), nullable=True))
        batch_op.create_index(batch_op.f('ix_codes_batch_id'), ['batch_id'], unique=False)

    if _has('sandbox_refunds')[0]:
        return
    op.create_table('sandbox_refunds',
    sa.Column('out_refund_no', sa.String(length=64), nullable=False),
    sa.Column('out_trade_no', sa.String(length=64), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('out_refund_no')
    )
    with op.batch_alter_table('sandbox_refunds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sandbox_refunds_out_trade_no'), ['out_trade_no'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sandbox_refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sandbox_refunds_out_trade_no'))
    op.drop_table('sandbox_refunds')

    with op.batch_alter_table('codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_codes_batch_id'))
        batch_op.drop_column('batch_id')

    # Only possible while every order has at most one refund.
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_constraint('uq_refunds_order_request_key', type_='unique')
        batch_op.drop_index(batch_op.f('ix_refunds_order_id'))
        batch_op.drop_column('request_key')
        batch_op.drop_column('operator')
        batch_op.create_unique_constraint(_order_id_unique(), ['order_id'])
