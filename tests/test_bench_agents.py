"""The agents benchmark still runs and reports every target of issue 3 with a measured value
(a smoke run; the figures come from `arbor bench agents`, not from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_agents.py"
TARGETS = {
    "instantiate_us",
    "instantiate_kib",
    "instantiate_us_vs_agno",
    "instantiate_kib_vs_agno",
    "node_overhead_us_memory",
    "node_overhead_vs_langgraph_memory",
    "node_overhead_ms_sqlite",
    "node_overhead_vs_langgraph_sqlite",
}


@pytest.mark.slow
def test_bench_agents_quick_run_reports_every_target(tmp_path: Path) -> None:
    out = tmp_path / "agents.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["bench"] == "agents"
    arbor, langgraph = data["clients"]["arbor"], data["clients"]["langgraph"]
    assert {"node_us_memory", "node_us_sqlite", "node_us_sqlite_sessions"} <= set(arbor)
    assert {"node_us_memory", "node_us_sqlite", "node_us_sqlite_sync"} <= set(langgraph)
    assert {t["name"] for t in data["targets"]} == TARGETS
    for t in data["targets"]:
        assert set(t) == {"name", "value", "op", "limit", "met"}
        assert isinstance(t["value"], float) and t["value"] > 0, t
