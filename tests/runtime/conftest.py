"""Runtime tests build a BatchService over the ``db`` fixture's database (SQLite and
PostgreSQL) with in-process model doubles or the mock upstream."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from _batch_helpers import MakeService, settings_for

from arbor.llm.model import Model
from arbor.runtime import BatchService
from arbor.store import Database


@pytest.fixture
def make_service(db: Database, tmp_path: Path) -> MakeService:
    def make(models: Mapping[str, Model] | None = None, **overrides: Any) -> BatchService:
        return BatchService(db, settings_for(tmp_path / "home", **overrides), models=models)

    return make
