"""Products: an optional picture address (``image_url``) the machine's screen downloads once
and caches.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by ``create_all`` of newer models before being stamped may have it.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns('products')}
    if 'image_url' in columns:
        return
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_url', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_column('image_url')
