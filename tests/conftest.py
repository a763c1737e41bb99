"""Suite-wide guards: no network beyond loopback; service-backed tests fail in CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from arbor.testing.network import block_network

REQUIRE_SERVICES = os.environ.get("ARBOR_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def _no_real_network() -> Iterator[None]:
    with block_network():
        yield


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never read the developer's ARBOR_* settings, .env or arbor.toml."""
    for name in list(os.environ):
        if name.startswith("ARBOR_") and not name.startswith(("ARBOR_TEST_", "ARBOR_REQUIRE_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("arbor-home")
    monkeypatch.setenv("ARBOR_HOME", str(home))
    monkeypatch.setenv("ARBOR_CONFIG", str(home / "arbor.toml"))
    monkeypatch.chdir(home)


def require_service(env_var: str, what: str) -> str:
    """The URL of a service-backed test's server; fails in CI, skips locally when unset."""
    url = os.environ.get(env_var)
    if url:
        return url
    message = f"{what} is required: set {env_var} (make test starts it)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """``postgresql+asyncpg://`` URL of a server where tests may create databases."""
    return require_service("ARBOR_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    return require_service("ARBOR_TEST_REDIS_URL", "Redis")
