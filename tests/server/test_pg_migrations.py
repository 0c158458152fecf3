"""Alembic: the migrated schema is exactly the models' schema, on SQLite and PostgreSQL, and
databases made before migrations existed are adopted without losing a row."""

from __future__ import annotations

import json
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from vendhw.server.db import BASELINE_REVISION, Database
from vendhw.server.models import Base


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _upgrade_from_nothing(url: str) -> None:
    """Run every migration step by step (not the create_all shortcut for new databases)."""
    from alembic import command
    from alembic.config import Config

    database = Database(url)
    config = Config()
    from pathlib import Path

    import vendhw.server.db as dbmod

    config.set_main_option("script_location", str(Path(dbmod.__file__).parent / "migrations"))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    database.dispose()


def test_the_migrations_build_exactly_the_models_schema(db_url: str) -> None:
    _upgrade_from_nothing(db_url)
    assert _diff(db_url) == []


def test_a_new_database_is_created_and_stamped(db_url: str) -> None:
    database = Database(db_url)
    result = database.migrate()
    database.dispose()
    assert result["from"] is None and result["to"] is not None
    assert _diff(db_url) == []
    again = Database(db_url)
    assert again.migrate() == {"from": result["to"], "to": result["to"]}
    again.dispose()


def test_a_database_from_before_migrations_is_adopted(db_url: str) -> None:
    engine = create_engine(db_url)
    Base.metadata.create_all(engine)  # what vendhw did before migrations
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO products (id, name, price) "
                                "VALUES ('cola', 'Cola', 350)"))
    engine.dispose()
    database = Database(db_url)
    result = database.migrate()
    assert result["from"] is None
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM products")).scalar() == "Cola"
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    database.dispose()
    assert version == result["to"]
    assert BASELINE_REVISION <= str(version)
    assert _diff(db_url) == []


def test_the_migrate_command(tmp_path: object) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    run = subprocess.run([sys.executable, "-m", "vendhw", "backend", "migrate", "--db", db,
                          "--json"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["from"] is None and data["to"]
    run = subprocess.run([sys.executable, "-m", "vendhw", "backend", "migrate", "--db", db],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "->" in run.stdout
