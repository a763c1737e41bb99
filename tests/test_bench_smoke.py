"""The LLM benchmark still runs and reports every target the issue names (a smoke run; the
figures themselves come from `arbor bench llm`, not from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_llm.py"


@pytest.mark.slow
def test_bench_llm_quick_run_writes_the_interface_shape(tmp_path: Path) -> None:
    out = tmp_path / "llm.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "arbor", "openai_sdk", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["bench"] == "llm" and set(data["clients"]) == {"arbor", "openai_sdk"}
    names = {t["name"] for t in data["targets"]}
    assert {
        "seq_p50_vs_openai_sdk",
        "throughput_c50_vs_openai_sdk",
        "stream_ttft_added_ms_vs_openai_sdk",
        "stream_cpu_us_per_chunk",
        "cache_hit_p99_us",
    } <= names
    for t in data["targets"]:
        assert set(t) == {"name", "value", "op", "limit", "met"}


GATEWAY = BENCH.parent / "bench_gateway.py"


@pytest.mark.slow
def test_bench_gateway_quick_run_measures_all_three_targets(tmp_path: Path) -> None:
    """Direct, `arbor serve` and LiteLLM's proxy, each a real process on loopback."""
    out = tmp_path / "gateway.json"
    proc = subprocess.run(
        [sys.executable, str(GATEWAY), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["bench"] == "gateway" and set(data["clients"]) == {"direct", "arbor", "litellm"}
    for figures in data["clients"].values():
        assert figures["throughput_c50_rps"] > 0 and figures["stream_content_chunks"] == 16
    assert {t["name"] for t in data["targets"]} == {
        "throughput_c50_vs_litellm",
        "added_p50_ms",
        "added_stream_ttft_ms",
    }
    for t in data["targets"]:
        assert set(t) == {"name", "value", "op", "limit", "met"}
