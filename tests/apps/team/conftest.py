"""The team's tests run generated code in the OS sandbox: like tests/runtime/sandbox they need
root and Linux namespaces, skip locally without them and fail under ARBOR_REQUIRE_SERVICES=1."""

from __future__ import annotations

import os

import pytest

from arbor.runtime.sandbox import Sandbox


@pytest.fixture
async def isolation() -> None:
    problem = await Sandbox().isolation_problem()
    if problem is None:
        return
    message = f"OS sandbox isolation is required: {problem}"
    if os.environ.get("ARBOR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
