"""Helpers shared by the runtime tests (imported by name: the test directory is on the path)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arbor.core.config import Settings
from arbor.runtime import BatchService

MakeService = Callable[..., BatchService]


def settings_for(home: Path, **overrides: Any) -> Settings:
    llm: dict[str, Any] = {
        "cache": {"enabled": False},
        "retry": {"max_attempts": 2, "base_delay": 0.001, "max_delay": 0.01},
        # Tests that fail calls on purpose count attempts exactly: no circuit opens unless
        # a test asks for one (test_an_upstream_that_stays_down_fails_items).
        "breaker": {"failure_threshold": 1000},
    }
    llm.update(overrides.pop("llm", {}))
    return Settings(home=home, default_model="test:f", llm=llm, **overrides)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
