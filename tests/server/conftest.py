"""Shared fixtures: an in-process backend with a fake clock, a registered machine and its
client, and RSA keys for the WeChat Pay / Alipay fakes (made once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vendhw.client import BackendClient
from vendhw.testing.backend import InProcessServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    srv = InProcessServer(tmp_path / "backend.db", order_ttl=60.0, query_interval=2.0,
                          query_max=8.0, late_window=600.0, redeliver_after=10.0)
    yield srv
    srv.close()


@pytest.fixture
def client(server: InProcessServer) -> Iterator[BackendClient]:
    server.add_machine("m1", slots={"A1": ("cola", 350), "A2": ("chips", 500)})
    with server.client("m1") as c:
        yield c


@pytest.fixture(scope="session")
def rsa_pair() -> tuple[str, str]:
    """(private PEM, public PEM) standing for one side's key (merchant or provider)."""
    return _pair()


@pytest.fixture(scope="session")
def rsa_pair_2() -> tuple[str, str]:
    """A second key pair: the provider's platform key, distinct from the merchant's."""
    return _pair()


def _pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


# --- databases: SQLite and a throwaway PostgreSQL cluster ------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One PostgreSQL cluster for the session (started and stopped here).

    Under ``CI=true`` a cluster that cannot start fails the tests; elsewhere they are skipped
    with the reason (PostgreSQL not installed, ...).
    """
    import os

    from pgcluster import ClusterUnavailable, start_cluster

    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield cluster
    cluster.stop()


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'backend.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.create_database(f"t{next(_db_counter)}"))  # type: ignore[attr-defined]
