"""Alembic environment: runs on the connection :class:`vendhw.server.db.Database` hands over
(``config.attributes["connection"]``), so the engine's SQLite tuning applies; online only."""

from __future__ import annotations

from alembic import context

from vendhw.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through Database.migrate()
    raise RuntimeError("run migrations through `vendhw backend migrate`")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
