"""Fixtures for the Renode generator: the SVDs kept in tests/data/svd, a small hand-written
SVD exercising derivedFrom/dim/clusters, and Mono's mcs (required in CI, like Postgres)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _renode_data import SMALL_SVD, SVD_DIR, SVD_NAMES

from arbor.apps.renode.svd import SvdDevice, load_device


@pytest.fixture(scope="session")
def devices() -> dict[str, SvdDevice]:
    """The three shared SVDs, parsed once per session."""
    return {name: load_device(SVD_DIR / f"{name}.svd") for name in SVD_NAMES}


@pytest.fixture(scope="session")
def small_svd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("svd") / "small.svd"
    path.write_text(SMALL_SVD, encoding="utf-8")
    return path


@pytest.fixture
def mcs(monkeypatch: pytest.MonkeyPatch) -> str:
    """Mono's mcs on PATH; fails when ARBOR_REQUIRE_SERVICES=1 (CI), skips locally."""
    given = os.environ.get("ARBOR_TEST_MCS")
    if given and Path(given).exists():
        monkeypatch.setenv("PATH", f"{Path(given).parent}{os.pathsep}{os.environ['PATH']}")
    found = shutil.which("mcs")
    if found:
        return found
    message = "Mono's mcs is required: apt-get install mono-mcs (make test installs it)"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
