"""Alembic migrations of the backend's schema (applied by ``vendhw backend migrate`` and at
every start of the backend; see :func:`vendhw.server.db.Database.migrate`)."""
