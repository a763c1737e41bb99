"""The batch benchmark still runs and reports every target the issue names (a smoke run; the
figures themselves come from `arbor bench batch`, not from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_batch.py"


@pytest.mark.slow
def test_bench_batch_quick_run_writes_the_interface_shape(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--items",
            "60",
            "--rpm",
            "1800",
            "--create-items",
            "2000",
            "--run-items",
            "300",
            "--only",
            "arbor",
            "openai_sdk_semaphore",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["bench"] == "batch"
    assert set(data["clients"]) == {"arbor", "openai_sdk_semaphore", "arbor_scale"}
    assert data["clients"]["arbor"]["upstream_429s"] == 0
    assert data["clients"]["arbor"]["unfinished"] == 0
    assert data["clients"]["arbor_scale"]["run_succeeded"] == 300
    assert {t["name"] for t in data["targets"]} == {
        "makespan_vs_ideal",
        "upstream_429s",
        "create_2000_items_s",
        "rss_growth_300_items_mb",
    }
    for t in data["targets"]:
        assert set(t) == {"name", "value", "op", "limit", "met"}
