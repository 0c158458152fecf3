"""Shared fixtures: an in-process backend with a fake clock, a registered machine and its
client, and RSA keys for the WeChat Pay / Alipay fakes (made once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vendhw.client import BackendClient
from vendhw.server.testing import InProcessServer


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
