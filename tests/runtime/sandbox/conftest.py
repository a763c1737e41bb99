"""Sandbox containment tests need root and Linux namespaces (CI has both): without them they
skip locally and fail when ``ARBOR_REQUIRE_SERVICES=1``, never pass silently."""

from __future__ import annotations

import os

import pytest

from arbor.runtime.sandbox import Sandbox


@pytest.fixture
async def isolation() -> None:
    """Fails (CI) or skips (locally) the test when OS isolation is unavailable."""
    problem = await Sandbox().isolation_problem()
    if problem is None:
        return
    message = f"OS sandbox isolation is required: {problem}"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
